"""Pre-train a tiny encoder on synthetic images: `python pretrain.py encoder=clip|dino [out=DIR]`."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://mof.conf", config_name="pretrain")
def main(cfg: DictConfig):
    from mof.console import setup_console

    setup_console()
    from mof.errors import one_line_errors
    from mof.pretraining.run import pretrain

    one_line_errors(pretrain)(cfg)  # bad input: one line on stderr, exit status 2


if __name__ == "__main__":
    main()
