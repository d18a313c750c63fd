"""Train a MoF model: `python train.py [mof=interleaved] [stage=pretrain] [key=value ...]`; `-m` for sweeps."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://mof.conf", config_name="train")
def main(cfg: DictConfig):
    from mof.console import setup_console

    setup_console()
    from mof.training.run import run

    return run(cfg)


if __name__ == "__main__":
    main()
