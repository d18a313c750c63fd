"""The search stage: CLIP-near candidates by FAISS (exact inner product up to `flat_max` vectors, IVF or IVF-PQ
above), every candidate re-scored exactly from the stored vectors before the thresholds apply, then DINOv2's
exact cosine. `brute_force_pairs` is the definition the search must reproduce on small collections."""

from __future__ import annotations

import logging

import numpy as np

from .settings import choose_index

log = logging.getLogger(__name__)


def build_index(vectors, flat_max: int = 1_000_000, nlist: int | None = None, nprobe: int = 32,
                pq_m: int | None = None, seed: int = 0, max_memory_gib: float | None = None):
    """A FAISS inner-product index of `vectors` (an array, or `ShardedRows` read block by block: the index holds the
    vectors, or their PQ codes; nothing else is held whole)."""
    import faiss

    n, d = vectors.shape
    nlist, pq_m, why = choose_index(n, d, flat_max, nlist, pq_m, max_memory_gib)
    if why:
        log.warning("index: %s", why)
    if nlist is None:
        index = faiss.IndexFlatIP(d)
    else:
        quantizer = faiss.IndexFlatIP(d)
        index = (faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT) if pq_m
                 else faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT))
        sample = np.sort(np.random.default_rng(seed).choice(n, min(n, 256 * nlist), replace=False))
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))   # trained on a sample, not on all
        index.nprobe = min(nprobe, nlist)
    if faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    for _, block in blocks(vectors):
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    return index


def blocks(vectors, size: int = 262_144):
    """`(first row, rows)` of `vectors` in order: an array in slices, `ShardedRows` shard by shard."""
    if hasattr(vectors, "blocks"):
        yield from vectors.blocks()
        return
    for start in range(0, len(vectors), size):
        yield start, vectors[start:start + size]


def query_rows(n: int, rank: int, world: int) -> range:
    """The images rank `rank` of `world` searches for: a contiguous block, the blocks covering 0..n-1 once."""
    per = -(-n // world)
    return range(min(n, rank * per), min(n, (rank + 1) * per))


def clip_candidates(clip: np.ndarray, k: int, threshold: float, chunk: int = 65536, rank: int = 0, world: int = 1,
                    **index_options) -> np.ndarray:
    """`[m, 2]` index pairs (i < j), each once, among each image's `k` nearest neighbours, whose exact CLIP cosine
    exceeds `threshold`. With `world` ranks, rank `rank` searches only its block of query images (`query_rows`)
    against the whole index; the union of the ranks' pairs is the one-process result."""
    n = len(clip)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    index = build_index(clip, **index_options)
    rows_of_rank = query_rows(n, rank, world)
    found = [np.zeros((0, 2), dtype=np.int64)]
    for start in range(rows_of_rank.start, rows_of_rank.stop, chunk):
        _, neighbours = index.search(np.ascontiguousarray(clip[start:min(start + chunk, rows_of_rank.stop)]),
                                     min(k + 1, n))
        rows = np.repeat(np.arange(start, start + len(neighbours)), neighbours.shape[1])
        cols = neighbours.reshape(-1)
        keep = (cols >= 0) & (cols != rows)
        pairs = np.unique(np.stack([np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])], axis=1),
                          axis=0)
        found.append(pairs[cosine(clip, pairs) > threshold])   # per chunk: memory holds near pairs, not n x k
    return np.unique(np.concatenate(found), axis=0)


def cosine(vectors: np.ndarray, pairs: np.ndarray, chunk: int = 1_000_000) -> np.ndarray:
    """Exact dot products of the rows of each pair (the vectors are unit length)."""
    return np.concatenate([np.einsum("ij,ij->i", vectors[pairs[s:s + chunk, 0]], vectors[pairs[s:s + chunk, 1]])
                           for s in range(0, len(pairs), chunk)]) if len(pairs) else np.zeros(0, np.float32)


COPY_THUMBNAIL = 16   # copies are compared as 16x16 RGB thumbnails (box-averaged)


def thumbnail(image) -> np.ndarray:
    """`[16, 16, 3]` in [0, 1]: the image box-averaged to 16x16 cells."""
    from PIL import Image

    return np.asarray(image.convert("RGB").resize((COPY_THUMBNAIL, COPY_THUMBNAIL), Image.BOX), np.float32) / 255.0


def is_copy(a: np.ndarray, b: np.ndarray, max_diff: float) -> bool:
    """Two thumbnails no cell of which differs by more than `max_diff` (in any channel): a resized or re-encoded
    copy, not another image. On the synthetic images, the two images of a pair differ by at least 0.46 in some cell
    (a shape's structure) and copies (0.75x and JPEG quality 40 at worst) by at most 0.34."""
    return float(np.abs(a - b).max()) <= max_diff


def blind_pairs(clip: np.ndarray, dino: np.ndarray, clip_threshold: float, dino_threshold: float, k: int,
                exclude_same: list | None = None, candidates: np.ndarray | None = None,
                **index_options) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(pairs, clip cosines, dino cosines)` of CLIP-near (> clip_threshold), DINO-far (< dino_threshold) pairs,
    sorted by the gap clip - dino (largest first). `exclude_same`: a key per image (file hash); pairs of equal keys
    are duplicates, not blind pairs. `candidates`: the CLIP-near pairs found already (by several ranks)."""
    pairs = clip_candidates(clip, k, clip_threshold, **index_options) if candidates is None else candidates
    if exclude_same is not None and len(pairs):
        keys = np.asarray(exclude_same)
        pairs = pairs[keys[pairs[:, 0]] != keys[pairs[:, 1]]]
    c, d = cosine(clip, pairs), cosine(dino, pairs)
    keep = d < dino_threshold
    pairs, c, d = pairs[keep], c[keep], d[keep]
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -(c - d)))
    return pairs[order], c[order], d[order]


def cap_per_image(pairs: np.ndarray, max_per_image: int | None) -> np.ndarray:
    """Indices of `pairs` (in their order) kept when no image may appear in more than `max_per_image` of them: one
    "hub" image cannot fill the top of a review."""
    if max_per_image is None:
        return np.arange(len(pairs))
    seen, keep = {}, []
    for n, (a, b) in enumerate(pairs.tolist()):   # a Python loop over the written pairs (max_pairs at most)
        if seen.get(a, 0) < max_per_image and seen.get(b, 0) < max_per_image:
            seen[a], seen[b] = seen.get(a, 0) + 1, seen.get(b, 0) + 1
            keep.append(n)
    return np.asarray(keep, dtype=np.int64)


def brute_force_pairs(clip: np.ndarray, dino: np.ndarray, clip_threshold: float, dino_threshold: float) -> set:
    """Every pair (i < j) over the thresholds, each one computed (small collections only)."""
    pairs = np.stack(np.triu_indices(len(clip), k=1), axis=1)
    keep = (cosine(clip, pairs) > clip_threshold) & (cosine(dino, pairs) < dino_threshold)
    return set(map(tuple, pairs[keep].tolist()))
