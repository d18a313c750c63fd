"""Evaluate a model: `python evaluate.py benchmark=mmvp benchmark.root=DIR checkpoint=PATH`; `-m checkpoint=A,B`."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://mof.conf", config_name="evaluate")
def main(cfg: DictConfig):
    from mof.console import setup_console

    setup_console()
    from mof.evaluation.entry import main as evaluate

    return evaluate(cfg)


if __name__ == "__main__":
    main()
