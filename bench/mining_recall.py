"""Mining recall on embeddings that behave like CLIP's, where random unit vectors (bench/mining.py) are IVF's worst
case: recall@k of IVF-Flat at several nprobe against exact search, on

- the tiny CLIP that mof ships: its image embeddings (64-d, `get_image_features`, L2-normalised) of `--images`
  held-out synthetic images, and
- a mixture fitted to them, at `--n` and `--n-large` vectors: k-means (FAISS, 64 centres) over the tiny CLIP's
  embeddings; a vector is a centre drawn with its cluster's frequency, plus Gaussian noise with that cluster's
  per-dimension spread, re-normalised. It keeps the clusters and their widths, not the fine structure.

Recall is the share of each query's true k nearest neighbours (exact inner product) that IVF returns, over
`--recall-queries` queries from the collection itself (as mining queries every image).

    python bench/mining_recall.py [--images 4000] [--n 1000000] [--n-large 10000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import record, table

K = 10
CHUNK = 200_000


def tiny_clip_embeddings(images: int) -> np.ndarray:
    import torch

    from mof.data.synthetic import make_images
    from mof.mining.embedders import Embedder
    from mof.model.presets import TINY_ENCODERS

    embedder = Embedder(TINY_ENCODERS["clip"])
    pictures = [img for img, _ in make_images(max(1, images // 18), 777, 64)][:images]
    out = []
    with torch.no_grad():
        for s in range(0, len(pictures), 256):
            out.append(embedder(embedder.pixels(pictures[s:s + 256])).numpy())
    return np.concatenate(out).astype(np.float32)


class Mixture:
    """Centres, their frequencies and per-dimension spreads, fitted to `x` by FAISS k-means."""

    def __init__(self, x: np.ndarray, centres: int = 64, seed: int = 0):
        import faiss

        km = faiss.Kmeans(x.shape[1], centres, niter=25, seed=seed, spherical=True)
        km.train(x)
        _, assign = km.index.search(x, 1)
        assign = assign[:, 0]
        self.centres = km.centroids
        self.weights = np.bincount(assign, minlength=centres) / len(x)
        self.spread = np.stack([x[assign == c].std(axis=0) if (assign == c).sum() > 1 else np.full(x.shape[1], 1e-3)
                                for c in range(centres)]).astype(np.float32)

    def sample(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop of the same collection whatever the chunking (a seed per 10 000 rows)."""
        out = []
        for b in range(start // 10_000, (stop - 1) // 10_000 + 1):
            rng = np.random.default_rng(1000 + b)
            c = rng.choice(len(self.weights), 10_000, p=self.weights)
            v = self.centres[c] + rng.standard_normal((10_000, self.centres.shape[1]), dtype=np.float32) * self.spread[c]
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            lo, hi = max(start, b * 10_000) - b * 10_000, min(stop, (b + 1) * 10_000) - b * 10_000
            out.append(v[lo:hi])
        return np.concatenate(out).astype(np.float32)


def recall_rows(name: str, source, n: int, nlist: int, nprobes: list[int], queries: int) -> list[list[str]]:
    """IVF-Flat over rows 0..n of `source(start, stop)` against exact search, for each nprobe."""
    import faiss

    d = source(0, 1).shape[1]
    q = source(0, min(n, queries))
    t0 = time.perf_counter()
    exact = faiss.IndexFlatIP(d)
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(source(0, min(n, 64 * nlist)))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(0, n, CHUNK):
        chunk = source(s, min(n, s + CHUNK))
        exact.add(chunk)
        ivf.add(chunk)
    add_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, truth = exact.search(q, K)
    exact_ms = (time.perf_counter() - t0) / len(q) * 1e3
    rows = []
    for probe in nprobes:
        ivf.nprobe = probe
        t0 = time.perf_counter()
        _, found = ivf.search(q, K)
        ms = (time.perf_counter() - t0) / len(q) * 1e3
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found.tolist(), truth.tolist())])
        rows.append([name, f"{n:,}", str(nlist), str(probe), f"{recall:.3f}", f"{ms:.3f}", f"{exact_ms:.2f}",
                     f"{train_s:.1f}", f"{add_s:.1f}"])
        print(rows[-1], flush=True)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--n-large", type=int, default=10_000_000)
    p.add_argument("--nprobe", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--recall-queries", type=int, default=1000)
    a = p.parse_args()
    x = tiny_clip_embeddings(a.images)
    mixture = Mixture(x)
    rows = recall_rows("tiny CLIP embeddings", lambda s, e: x[s:e], len(x), max(1, int(4 * np.sqrt(len(x)))),
                       a.nprobe, a.recall_queries)
    for n in (a.n, a.n_large):
        if n:
            rows += recall_rows("mixture fitted to them", mixture.sample, n, 1024 if n <= 1_000_000 else 4096,
                                a.nprobe, a.recall_queries)
    record("Mining: IVF recall on CLIP-like embeddings (the tiny CLIP, and a mixture fitted to it)",
           f"recall@{K} of IVF-Flat against exact inner product on {a.recall_queries} queries from the collection; "
           f"the tiny CLIP's 64-d image embeddings of {len(x)} held-out synthetic images, and a 64-centre mixture "
           "fitted to them (bench/mining_recall.py says how); train and add s: IVF's, with the exact index filled "
           "alongside\n\n" + table(["vectors", "n", "nlist", "nprobe", f"recall@{K}", "IVF ms/query",
                                   "exact ms/query", "train s", "add s"], rows))


if __name__ == "__main__":
    main()
