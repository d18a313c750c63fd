"""The held-out synthetic benchmark (MMVP layout + Pattern column), generated on first use."""

from __future__ import annotations

from pathlib import Path

DEFAULTS = {"pairs_per_pattern": 150, "benchmark_pairs_per_pattern": 20, "seed": 0, "size": 64, "shuffle_options": False}


def synthetic_benchmark_root(synthetic: dict | None, data_dir: str | Path) -> Path:
    from ..data.synthetic import generate

    args = {**DEFAULTS, "out": Path(data_dir) / "synthetic", **dict(synthetic or {})}
    return generate(**args) / "benchmark"
