"""The paper in miniature on a laptop: `python reproduce.py [seeds=[0,1,2]] [train_overrides=[...]]`."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://mof.conf", config_name="reproduce")
def main(cfg: DictConfig):
    from mof.console import setup_console

    setup_console()
    from mof.errors import one_line_errors
    from mof.study.run import reproduce

    one_line_errors(reproduce)(cfg)  # bad input: one line on stderr, exit status 2


if __name__ == "__main__":
    main()
