"""Every `mine.py` setting checked before any image is read: a wrong one is a one-line error naming its key."""

from __future__ import annotations

import math

from ..errors import ConfigError


class MiningConfigError(ConfigError):
    pass


def _number(cfg, key: str):
    node, value = cfg, None
    for part in key.split("."):
        value = node.get(part) if hasattr(node, "get") else None
        node = value
    return value


def require(cfg, key: str, ok, expected: str) -> None:
    value = _number(cfg, key)
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise MiningConfigError(f"{key}: expected {expected}, got {value!r}")


def positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _cosine(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and -1.0 <= v <= 1.0


def check_settings(cfg) -> None:
    require(cfg, "clip_threshold", _cosine, "a cosine in [-1, 1]")
    require(cfg, "dino_threshold", _cosine, "a cosine in [-1, 1]")
    for key in ("k", "max_pairs", "shard_size", "batch_size", "benchmark_pairs", "review.per_page", "review.max_pairs",
                "index.flat_max", "index.nprobe"):
        require(cfg, key, positive_int, "a positive integer")
    require(cfg, "review.contact_sheet", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "0 or a positive integer")
    require(cfg, "num_workers", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "0 or more")
    require(cfg, "near_duplicate_max_diff", lambda v: v is None or (_cosine(v) and 0 <= v <= 1),
            "null or a difference in [0, 1]")
    require(cfg, "index.max_memory_gib", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
            "a positive number of GiB")
    for key in ("index.nlist", "index.pq_m", "review.max_pairs_per_image"):
        require(cfg, key, lambda v: v is None or positive_int(v), "null or a positive integer")
    require(cfg, "overwrite", lambda v: isinstance(v, bool), "true or false")
    require(cfg, "encoders", lambda v: v == "tiny" or (hasattr(v, "keys") and set(v.keys()) == {"clip", "dino"}),
            "tiny, or {clip: <hub id or folder>, dino: <hub id or folder>}")
    for kind in ("clip", "dino"):
        if cfg.encoders != "tiny":
            require(cfg, f"encoders.{kind}", lambda v: isinstance(v, str) and v.strip() != "",
                    "a hub id, a folder, or tiny")


def index_gib(n: int, d: int, nlist: int | None, pq_m: int | None) -> float:
    """What an index of `n` `d`-d vectors holds: the vectors (exact, IVF-Flat) or the PQ codes, and the ids."""
    per_vector = (pq_m + 8 if pq_m else d * 4 + 8) if nlist else d * 4
    return n * per_vector / 2**30


PQ_CHOICES = (64, 48, 32, 16, 8, 4)   # sub-quantizers tried, finest first, when the vectors do not fit the budget


def choose_index(n: int, d: int, flat_max: int, nlist: int | None, pq_m: int | None,
                 max_memory_gib: float | None) -> tuple[int | None, int | None, str]:
    """`(nlist, pq_m, why)` for `n` `d`-d vectors: exact search (nlist None) up to `flat_max`, IVF above; when the
    vectors themselves would exceed `max_memory_gib` and no `pq_m` was given, IVF-PQ with the finest `pq_m` that fits
    (the choice autofaiss makes under a memory budget; autofaiss itself is not used: it would add a dependency to
    make this one choice). A budget nothing fits (`check_index_budget`), or FAISS settings that do not fit the
    collection (`check_index_fits`), are one-line errors."""
    chosen = None if n <= flat_max else (nlist or int(4 * math.sqrt(n)))
    why = ""
    if max_memory_gib is not None and pq_m is None and index_gib(n, d, chosen, None) > max_memory_gib:
        ivf = nlist or int(4 * math.sqrt(n))
        fits = [m for m in PQ_CHOICES if d % m == 0 and index_gib(n, d, ivf, m) <= max_memory_gib]
        if fits:
            why = (f"the vectors would hold {index_gib(n, d, chosen, None):.2f} GiB, over index.max_memory_gib="
                   f"{max_memory_gib}: IVF-PQ with pq_m={fits[0]} ({index_gib(n, d, ivf, fits[0]):.2f} GiB) instead")
            chosen, pq_m = ivf, fits[0]
    check_index_budget(n, d, chosen, pq_m, max_memory_gib)
    check_index_fits(n, d, chosen, pq_m)
    return chosen, pq_m, why


def check_index_budget(n: int, d: int, nlist: int | None, pq_m: int | None, max_memory_gib: float | None) -> None:
    """The index these settings make holds at most `max_memory_gib` (None: no bound)."""
    gib = index_gib(n, d, nlist, pq_m)
    if max_memory_gib is not None and gib > max_memory_gib:
        raise MiningConfigError(f"index.max_memory_gib: the index of {n:,} {d}-d embeddings would hold {gib:.2f} GiB "
                                f"with these settings, over index.max_memory_gib={max_memory_gib}; raise it, set a "
                                "smaller index.pq_m (IVF-PQ holds pq_m + 8 bytes a vector), or mine the collection in parts")


def check_index_fits(n: int, d: int, nlist: int | None, pq_m: int | None) -> None:
    """The FAISS settings against the collection they index (known only once it is embedded), where FAISS would
    abort or train lists on nothing. `nlist` None: exact search."""
    if nlist is None:
        return
    if nlist > n:
        raise MiningConfigError(f"index.nlist: {nlist} lists for {n} images; expected at most one list per image "
                                "(FAISS advises 39 or more images per list), or a larger index.flat_max for exact search")
    if pq_m is not None:
        if d % pq_m:
            raise MiningConfigError(f"index.pq_m: {pq_m} sub-quantizers do not divide the {d}-d CLIP embeddings; "
                                    f"expected a divisor of {d}")
        if n < 256:
            raise MiningConfigError(f"index.pq_m: IVF-PQ trains 256 centroids per sub-quantizer and the collection "
                                    f"has {n} images; expected null (IVF-Flat) below 256 images")
