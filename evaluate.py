"""Evaluate a model: `python evaluate.py benchmark=mmvp benchmark.root=DIR checkpoint=PATH`; `-m checkpoint=A,B`."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig):
    from mof.evaluation.entry import evaluate

    return evaluate(cfg)["pair_accuracy"]


if __name__ == "__main__":
    main()
