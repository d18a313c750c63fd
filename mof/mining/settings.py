"""Every `mine.py` setting checked before any image is read: a wrong one is a one-line error naming its key."""

from __future__ import annotations

import math

from ..errors import MofError


class MiningConfigError(MofError, ValueError):
    pass


def _number(cfg, key: str):
    node, value = cfg, None
    for part in key.split("."):
        value = node.get(part) if hasattr(node, "get") else None
        node = value
    return value


def _require(cfg, key: str, ok, expected: str) -> None:
    value = _number(cfg, key)
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise MiningConfigError(f"{key}: expected {expected}, got {value!r}")


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _cosine(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and -1.0 <= v <= 1.0


def check_settings(cfg) -> None:
    _require(cfg, "clip_threshold", _cosine, "a cosine in [-1, 1]")
    _require(cfg, "dino_threshold", _cosine, "a cosine in [-1, 1]")
    for key in ("k", "max_pairs", "shard_size", "batch_size", "benchmark_pairs", "review.per_page", "review.max_pairs",
                "index.flat_max", "index.nprobe"):
        _require(cfg, key, _positive_int, "a positive integer")
    _require(cfg, "review.contact_sheet", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
             "0 or a positive integer")
    _require(cfg, "num_workers", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "0 or more")
    _require(cfg, "near_duplicate_max_diff", lambda v: v is None or (_cosine(v) and 0 <= v <= 1),
             "null or a difference in [0, 1]")
    for key in ("index.nlist", "index.pq_m", "review.max_pairs_per_image"):
        _require(cfg, key, lambda v: v is None or _positive_int(v), "null or a positive integer")
    _require(cfg, "overwrite", lambda v: isinstance(v, bool), "true or false")
