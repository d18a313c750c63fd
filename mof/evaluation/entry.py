"""`evaluate(cfg)`: the body of `evaluate.py` (one benchmark, one checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..errors import ConfigError, MofError, exit_with, refuse_finished
from .benchmarks import get_benchmark
from .run import evaluate_benchmark, rescore
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
    """`evaluate.py`'s body: the benchmark's primary metric; an input error is one line on stderr and exit status 2."""
    try:
        results = evaluate(cfg)
        return results[results["primary_metric"]]
    except MofError as e:
        exit_with(e)


def evaluate(cfg) -> dict:
    benchmark_class = get_benchmark(cfg.benchmark.name)
    check(cfg)
    b = cfg.benchmark
    out_dir = Path(cfg.paths.output_dir)
    refuse_finished(out_dir, ["results.json", "predictions.jsonl"], cfg.get("overwrite") is True)
    benchmark = benchmark_class(OmegaConf.to_container(b, resolve=True), cfg.paths.data_dir)
    if b.get("predictions") and benchmark.kind != "mllm":
        raise ConfigError(f"benchmark.predictions: {benchmark.name} scores a CLIP-like encoder's image-text "
                          "similarities, not answers; there is no answer file to re-score (give checkpoint=<the encoder>)")
    if b.get("predictions"):
        results = rescore(benchmark, b.predictions, out_dir, b.get("limit"))
    elif benchmark.kind == "encoder":  # not answered by an MLLM (MMVP-VLM)
        results = benchmark.evaluate_model(cfg.checkpoint, out_dir, _device(cfg.device))
    else:
        if not cfg.checkpoint:
            raise ConfigError("checkpoint: expected a mof export folder, a .ckpt or a LLaVA checkpoint")
        results = evaluate_benchmark(benchmark, cfg.checkpoint, out_dir, b.get("template"), b.batch_size,
                                     b.get("max_new_tokens"), _device(cfg.device), b.get("limit"))
    if cfg.get("logger") == "wandb":
        log_results(results, out_dir, cfg.task_name)
    return results
