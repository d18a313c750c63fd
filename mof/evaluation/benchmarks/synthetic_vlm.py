"""The held-out synthetic pairs posed to a CLIP-like model, in MMVP-VLM's layout: each image's statement is its full
description (`mof.data.synthetic.caption` with every property named), and a pair counts if both statements pick
their own image. Drawn from the benchmark seed stream (no scene shared with pre-training or training)."""

from __future__ import annotations

import csv
from pathlib import Path

from ...data.synthetic import (BENCHMARK_SEED_OFFSET, PROPERTIES, caption, generation_spec, make_images,
                               write_once)
from ...data.patterns import canonical_pattern
from .mmvp_vlm import IMAGE_DIRS, MMVPVLM

DEFAULTS = {"pairs_per_pattern": 20, "seed": 0, "size": 64}


def write_vlm_benchmark(out: Path, pairs_per_pattern: int, seed: int, size: int) -> dict:
    rows = []
    for qid, (img, attrs) in enumerate(make_images(pairs_per_pattern, seed + BENCHMARK_SEED_OFFSET, size), 1):
        kind = canonical_pattern(attrs["pattern"])
        (out / IMAGE_DIRS[0] / kind).mkdir(parents=True, exist_ok=True)
        img.save(out / IMAGE_DIRS[0] / kind / f"{qid}.jpg", quality=95)
        rows.append([qid, kind, caption(attrs, (*PROPERTIES, "shape"))])
    with open(out / "Questions.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["Question ID", "Type", "Statement"], *rows])
    return {"statements": len(rows), "pairs": len(rows) // 2}


def synthetic_vlm_root(data_dir: str | Path, **options) -> Path:
    """`<data_dir>/synthetic/vlm`, generated if missing."""
    spec = generation_spec(DEFAULTS, options)
    out = Path(data_dir) / "synthetic" / "vlm"
    return write_once(out, {**spec, "version": 1}, lambda d: {"benchmark": write_vlm_benchmark(d, **spec)})


class SyntheticVLM(MMVPVLM):
    """`benchmark=synthetic_vlm checkpoint=<a CLIP-like model>`: MMVP-VLM over the held-out synthetic pairs."""

    name = "synthetic_vlm"

    def vlm_root(self):
        return self.section.get("root") or synthetic_vlm_root(self.data_dir, **dict(self.section.get("synthetic") or {}))
