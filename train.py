"""Train a MoF model: `python train.py [mof=interleaved] [stage=pretrain] [key=value ...]`; `-m` for sweeps."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig):
    from mof.training.run import run

    return run(cfg)


if __name__ == "__main__":
    main()
