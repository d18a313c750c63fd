"""The held-out synthetic benchmark: pairs of the synthetic visual patterns drawn from a seed stream training
never uses, in MMVP's layout with a `Pattern` column; written on first use."""

from __future__ import annotations

from pathlib import Path

from ...data.synthetic import BENCHMARK_SEED_OFFSET, generation_spec, make_pairs, write_once
from .mmvp import MMVP, write_mmvp

DEFAULTS = {"pairs_per_pattern": 20, "seed": 0, "size": 64, "shuffle_options": False}


def write_benchmark(out: Path, pairs_per_pattern: int, seed: int, size: int, shuffle_options: bool) -> dict:
    rows, images = [], []
    for pattern, items, options in make_pairs(pairs_per_pattern, seed + BENCHMARK_SEED_OFFSET, size, shuffle_options):
        for img, _, letter in items:
            rows.append({"Question": pattern.question, "Options": options, "Correct Answer": letter,
                         "Pattern": pattern.name})
            images.append(img)
    return write_mmvp(out, rows, images)


def synthetic_benchmark_root(data_dir: str | Path, **options) -> Path:
    """`<data_dir>/synthetic/benchmark`, generated if missing (options as in `DEFAULTS`)."""
    spec = generation_spec(DEFAULTS, options)
    out = Path(data_dir) / "synthetic" / "benchmark"
    return write_once(out, {**spec, "version": 3}, lambda d: {"benchmark": write_benchmark(d, **spec)})


class Synthetic(MMVP):
    """`benchmark=synthetic`: MMVP's reading and scoring over the held-out synthetic pairs (`root`, or generated
    under `data_dir` from the `synthetic` options)."""

    name = "synthetic"

    def root(self) -> Path:
        root = self.section.get("root")
        return Path(root) if root else synthetic_benchmark_root(self.data_dir, **dict(self.section.get("synthetic") or {}))
