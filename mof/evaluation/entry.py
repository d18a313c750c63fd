"""`evaluate(cfg)`: the body of `evaluate.py` (one benchmark, one checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch

from .benchmarks.mmvp_vlm import evaluate_vlm
from .benchmarks.synthetic import synthetic_benchmark_root
from .run import evaluate_mcq, rescore
from .wandb_log import log_results


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def evaluate(cfg) -> dict:
    b = cfg.benchmark
    out_dir = Path(cfg.paths.output_dir)
    if b.name == "mmvp_vlm":
        if not cfg.checkpoint:
            raise ValueError("checkpoint: a CLIP-like model (hub id or directory) is required for mmvp_vlm")
        results = evaluate_vlm(cfg.checkpoint, b.root, out_dir, b.batch_size, _device(cfg.device))
    else:
        if b.get("predictions"):
            results = rescore(b.predictions, out_dir, b.name, b.corrections)
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
