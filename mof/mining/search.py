"""The search stage: CLIP-near candidates by FAISS (exact inner product up to `flat_max` vectors, IVF or IVF-PQ
above), every candidate re-scored exactly from the stored vectors before the thresholds apply, then DINOv2's
exact cosine. `brute_force_pairs` is the definition the search must reproduce on small collections.

On disk, as mine.py runs it: each rank writes its query chunks' CLIP-near pairs (`write_candidates`), then scores
its share of the buckets of first images (`write_blind_pairs`), and rank 0 reads the best back by merging the sorted
buckets (`in_order`): memory is set by the chunk and bucket sizes, not by how many pairs the collection has."""

from __future__ import annotations

import heapq
import logging
from pathlib import Path

import numpy as np

from ..atomic import write_file
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


def search_chunks(clip, k: int, threshold: float, chunk: int = 65536, rank: int = 0, world: int = 1,
                  **index_options):
    """Per chunk of `chunk` query images (of rank `rank`'s block, `query_rows`): the `[m, 2]` index pairs (i < j),
    sorted and each once, among each query's `k` nearest neighbours, whose exact CLIP cosine exceeds `threshold`.
    Memory holds one chunk's near pairs, never n x k. A pair found from both its images appears in two chunks."""
    n = len(clip)
    rows_of_rank = query_rows(n, rank, world)
    index = build_index(clip, **index_options) if n >= 2 else None
    for start in range(rows_of_rank.start, rows_of_rank.stop, chunk):
        if index is None:
            yield np.zeros((0, 2), dtype=np.int64)
            continue
        _, neighbours = index.search(np.ascontiguousarray(clip[start:min(start + chunk, rows_of_rank.stop)]),
                                     min(k + 1, n))
        rows = np.repeat(np.arange(start, start + len(neighbours)), neighbours.shape[1])
        cols = neighbours.reshape(-1)
        keep = (cols >= 0) & (cols != rows)
        pairs = np.unique(np.stack([np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])], axis=1),
                          axis=0)
        yield pairs[cosine(clip, pairs) > threshold]


def clip_candidates(clip, k: int, threshold: float, chunk: int = 65536, rank: int = 0, world: int = 1,
                    **index_options) -> np.ndarray:
    """The union of `search_chunks` in memory (small collections; mine.py keeps them on disk: `write_candidates`).
    With `world` ranks, rank `rank` searches only its block of query images against the whole index; the union of
    the ranks' pairs is the one-process result."""
    found = list(search_chunks(clip, k, threshold, chunk, rank, world, **index_options))
    return np.unique(np.concatenate([np.zeros((0, 2), dtype=np.int64)] + found), axis=0)


def candidate_files(folder: Path, n: int, rank: int, world: int, chunk: int = 65536) -> list[Path]:
    """The files rank `rank` of `world` writes its chunks' pairs to: named by the layout, so files of another
    layout (an interrupted run on more ranks) are never read, and every file of this one is written afresh."""
    chunks = -(-len(query_rows(n, rank, world)) // chunk)
    return [folder / f"candidates-of{world}-rank{rank:05d}-chunk{c:05d}.npy" for c in range(chunks)]


def write_candidates(folder: Path, clip, k: int, threshold: float, rank: int = 0, world: int = 1,
                     chunk: int = 65536, **index_options) -> list[Path]:
    """`search_chunks` streamed to disk, a file per chunk holding `[2, m]` (the first images in one contiguous
    row, sorted, so a bucket's slice is found by binary search on the memory-mapped file)."""

    folder.mkdir(parents=True, exist_ok=True)
    files = candidate_files(folder, len(clip), rank, world, chunk)
    for path, pairs in zip(files, search_chunks(clip, k, threshold, chunk, rank, world, **index_options), strict=True):
        write_file(path, lambda f, pairs=pairs: np.save(f, np.ascontiguousarray(pairs.T)))
    return files


def cosine(vectors: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Exact dot products of the rows of each pair (the vectors are unit length), gathered 2^25 numbers (128 MB)
    a side at a time, whatever the width."""
    chunk = max(1, 2**25 // vectors.shape[1])
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


def score_pairs(pairs: np.ndarray, clip, dino, dino_threshold: float,
                keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(pairs, clip cosines, dino cosines)` of the CLIP-near `pairs` whose DINO cosine is under `dino_threshold`
    and whose images' `keys` (file hashes) differ, sorted by the gap clip - dino (largest first), then by the
    images' indices."""
    if keys is not None and len(pairs):
        pairs = pairs[keys[pairs[:, 0]] != keys[pairs[:, 1]]]
    c, d = cosine(clip, pairs), cosine(dino, pairs)
    keep = d < dino_threshold
    pairs, c, d = pairs[keep], c[keep], d[keep]
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -(c - d)))
    return pairs[order], c[order], d[order]


def blind_pairs(clip, dino, clip_threshold: float, dino_threshold: float, k: int,
                exclude_same: list | None = None, candidates: np.ndarray | None = None,
                **index_options) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(pairs, clip cosines, dino cosines)` of CLIP-near (> clip_threshold), DINO-far (< dino_threshold) pairs,
    in `score_pairs`' order, in memory. `exclude_same`: a key per image (file hash); pairs of equal keys are
    duplicates, not blind pairs. `candidates`: the CLIP-near pairs found already."""
    pairs = clip_candidates(clip, k, clip_threshold, **index_options) if candidates is None else candidates
    return score_pairs(pairs, clip, dino, dino_threshold, None if exclude_same is None else np.asarray(exclude_same))


BUCKET_ROWS = 131_072   # blind pairs are scored a bucket at a time: pairs whose first image is in one block of rows
BLIND = np.dtype([("i", "<i8"), ("j", "<i8"), ("clip", "<f4"), ("dino", "<f4")])   # a row of a blind-pair file


def blind_files(folder: Path, n: int, bucket_rows: int = BUCKET_ROWS) -> list[Path]:
    """Every bucket's file, `blind-BBBBB.npy`, bucket b holding the blind pairs whose first image is in rows
    [b * bucket_rows, (b + 1) * bucket_rows)."""
    return [folder / f"blind-{b:05d}.npy" for b in range(-(-n // bucket_rows))]


def write_blind_pairs(candidates: list[Path], folder: Path, clip, dino, dino_threshold: float,
                      keys: np.ndarray | None = None, bucket_rows: int = BUCKET_ROWS, rank: int = 0,
                      world: int = 1) -> list[Path]:
    """`score_pairs` over the candidate files (`write_candidates`, of every rank), a bucket of first images at a
    time, each bucket's blind pairs written sorted to its file (`blind_files`): memory holds one bucket, not the
    collection's pairs. With `world` ranks, rank `rank` scores buckets rank, rank + world, ...; returns its files."""

    parts = [m for m in (np.load(p, mmap_mode="r") for p in candidates) if m.shape[1]]
    every = blind_files(folder, len(clip), bucket_rows)
    for b in range(rank, len(every), world):
        lo = b * bucket_rows
        pieces = [np.asarray(m[:, np.searchsorted(m[0], lo):np.searchsorted(m[0], lo + bucket_rows)]).T for m in parts]
        pairs = np.unique(np.concatenate([np.zeros((0, 2), dtype=np.int64)] + pieces), axis=0)   # a pair found twice
        pairs, c, d = score_pairs(pairs, clip, dino, dino_threshold, keys)
        rows = np.empty(len(pairs), BLIND)
        rows["i"], rows["j"], rows["clip"], rows["dino"] = pairs[:, 0], pairs[:, 1], c, d
        write_file(every[b], lambda f, rows=rows: np.save(f, rows))
    return every[rank::world]


def count_rows(files: list[Path]) -> int:
    """How many rows the `.npy` files hold (their headers read, not their data)."""
    return sum(len(np.load(f, mmap_mode="r")) for f in files)


def in_order(files: list[Path], block: int = 1024):
    """`(i, j, clip cosine, dino cosine)` of every blind pair in the files, in `score_pairs`' order over all of them
    (a merge of the sorted buckets, read `block` rows at a time: a consumer that stops early reads little)."""
    def rows(path):
        m = np.load(path, mmap_mode="r")
        for s in range(0, len(m), block):
            part = np.asarray(m[s:s + block])
            for gap, i, j, c, d in zip((-(part["clip"] - part["dino"])).tolist(), part["i"].tolist(),
                                       part["j"].tolist(), part["clip"].tolist(), part["dino"].tolist()):
                yield gap, i, j, c, d

    for _, i, j, c, d in heapq.merge(*(rows(p) for p in files)):
        yield i, j, c, d


def file_keys(hashes: list[str]) -> np.ndarray:
    """A 64-bit number per image from its file's SHA-1 (its first 16 hex digits): equal files, equal keys, in 8
    bytes an image instead of a Python string (a chance collision among 10M images: ~3e-6)."""
    return np.fromiter((int(h[:16], 16) for h in hashes), dtype=np.uint64, count=len(hashes))


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
