"""Find CLIP-blind pairs: `python mine.py images=DIR encoders.clip=openai/clip-vit-large-patch14 encoders.dino=facebook/dinov2-large`."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://mof.conf", config_name="mine")
def main(cfg: DictConfig):
    from mof.console import setup_console

    setup_console()
    from mof.errors import one_line_errors
    from mof.mining.run import mine

    one_line_errors(mine)(cfg)  # bad input: one line on stderr, exit status 2


if __name__ == "__main__":
    main()
