"""`evaluate(cfg)`: the body of `evaluate.py` (one benchmark, one checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..build import ConfigError
from ..errors import MofError, exit_with
from .benchmarks.mmvp_vlm import evaluate_vlm
from .benchmarks.synthetic import synthetic_benchmark_root
from .run import evaluate_mcq, rescore
from .wandb_log import log_results


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def check(cfg) -> None:
    b = cfg.benchmark
    for key in ("batch_size", "max_new_tokens"):
        value = b.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"benchmark.{key}: expected a positive integer, got {value!r}")
    if b.get("limit") is not None and (not isinstance(b.limit, int) or b.limit < 1):
        raise ConfigError(f"benchmark.limit: expected null or a positive integer, got {b.limit!r}")


def main(cfg) -> float:
    """`evaluate.py`'s body: the primary metric; an input error is one line on stderr and exit status 2."""
    try:
        return evaluate(cfg)["pair_accuracy"]
    except MofError as e:
        exit_with(e)


def evaluate(cfg) -> dict:
    check(cfg)
    b = cfg.benchmark
    out_dir = Path(cfg.paths.output_dir)
    if b.name == "mmvp_vlm":
        if not cfg.checkpoint:
            raise ValueError("checkpoint: a CLIP-like model (hub id or directory) is required for mmvp_vlm")
        results = evaluate_vlm(cfg.checkpoint, b.root, out_dir, b.batch_size, _device(cfg.device))
    else:
        if b.get("predictions"):
            results = rescore(b.predictions, out_dir, b.name, b.corrections, b.root)
        else:
            if not cfg.checkpoint:
                raise ValueError("checkpoint: expected a mof export folder, a .ckpt or a LLaVA checkpoint")
            root = b.root
            if b.name == "synthetic" and root is None:
                root = synthetic_benchmark_root(cfg.paths.data_dir, **dict(b.get("synthetic") or {}))
            results = evaluate_mcq(cfg.checkpoint, root, out_dir, b.name, b.template, b.batch_size, b.prompt,
                                   b.corrections, b.max_new_tokens, _device(cfg.device), b.limit)
    if cfg.get("logger") == "wandb":
        log_results(results, out_dir, cfg.task_name)
    return results
