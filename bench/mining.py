"""Mining at scale: FAISS search time and memory for random unit vectors of CLIP ViT-L/14's width (768).

1M vectors, exact (IndexFlatIP) vs IVF-Flat, with IVF's recall@k against exact on the same queries; 10M with IVF-PQ
only, the vectors streamed in chunks (10M float32 vectors are 29 GiB, more than this machine's memory). Search
time is measured on `--queries` queries and scaled to all n (every image queries its k neighbours). Random unit
vectors are the hardest case for IVF (no clusters); real embeddings cluster. Each method runs in its own process
so its peak memory is its own.

    python bench/mining.py [--n 1000000] [--n-large 10000000] [--queries 2000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
from common import record, table

D, K = 768, 10
CHUNK = 100_000   # vectors added / scanned at a time
BLOCK = 10_000    # vectors generated from one seed


def vectors(start: int, stop: int, seed: int = 0) -> np.ndarray:
    """Rows start..stop of a fixed random unit-vector collection, generated chunk by chunk (never held whole)."""
    out = []
    for c in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        block = np.random.default_rng(seed + c).standard_normal((BLOCK, D), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        lo, hi = max(start, c * BLOCK) - c * BLOCK, min(stop, (c + 1) * BLOCK) - c * BLOCK
        out.append(block[lo:hi])
    return np.concatenate(out)


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def exact_neighbours(n: int, queries: np.ndarray) -> np.ndarray:
    """The true top-k of each query over n vectors, streamed (for recall)."""
    import faiss

    best_d = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), K), dtype=np.int64)
    for start in range(0, n, CHUNK):
        index = faiss.IndexFlatIP(D)
        index.add(vectors(start, min(n, start + CHUNK)))
        d, i = index.search(queries, K)
        d_all, i_all = np.concatenate([best_d, d], 1), np.concatenate([best_i, i + start], 1)
        order = np.argsort(-d_all, axis=1)[:, :K]
        best_d, best_i = np.take_along_axis(d_all, order, 1), np.take_along_axis(i_all, order, 1)
    return best_i


def run(method: str, n: int, q: int, nlist: int, nprobes: list[int], pq_m: int, recall_queries: int) -> list[dict]:
    import faiss

    queries = vectors(0, q)
    t0 = time.perf_counter()
    if method == "exact":
        index = faiss.IndexFlatIP(D)
        train_s = 0.0
    else:
        quantizer = faiss.IndexFlatIP(D)
        index = (faiss.IndexIVFPQ(quantizer, D, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT) if method == "ivf-pq"
                 else faiss.IndexIVFFlat(quantizer, D, nlist, faiss.METRIC_INNER_PRODUCT))
        index.train(vectors(0, min(n, 64 * nlist)))
        train_s = time.perf_counter() - t0
    add_s = 0.0
    for start in range(0, n, CHUNK):
        chunk = vectors(start, min(n, start + CHUNK))
        t1 = time.perf_counter()
        index.add(chunk)
        add_s += time.perf_counter() - t1
    code_bytes = {"exact": 4 * D, "ivf": 4 * D + 8, "ivf-pq": pq_m + 8}[method]
    truth = exact_neighbours(n, queries[:recall_queries]) if method != "exact" else None
    results = []
    for probe in ([None] if method == "exact" else nprobes):
        if probe is not None:
            index.nprobe = probe
        t2 = time.perf_counter()
        _, found = index.search(queries, K)
        search_s = time.perf_counter() - t2
        r = {"method": method if probe is None else f"{method}, nprobe {probe}", "n": n, "train_s": train_s,
             "add_s": add_s, "search_s_per_query": search_s / q, "search_all_s": search_s / q * n,
             "index_gib": n * code_bytes / 1024**3, "peak_gib": peak_gib()}
        if truth is not None:
            r["recall"] = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found[:recall_queries].tolist(),
                                                                                    truth.tolist())]))
        results.append(r)
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--n-large", type=int, default=10_000_000)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", type=int, nargs="+", default=[32, 128])
    p.add_argument("--recall-queries", type=int, default=200)
    p.add_argument("--pq-m", type=int, default=64)
    p.add_argument("--child", nargs=2, default=None, metavar=("METHOD", "N"))
    a = p.parse_args()
    if a.child:
        print(json.dumps(run(a.child[0], int(a.child[1]), a.queries, a.nlist, a.nprobe, a.pq_m, a.recall_queries)))
        return
    runs = []
    for method, n in (("exact", a.n), ("ivf", a.n), ("ivf-pq", a.n_large)):
        args = [sys.executable, __file__, "--child", method, str(n), "--queries", str(a.queries), "--nlist",
                str(a.nlist), "--nprobe", *map(str, a.nprobe), "--pq-m", str(a.pq_m), "--recall-queries",
                str(a.recall_queries)]
        runs += json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(runs[-1], flush=True)
    rows = [[r["method"], f"{r['n']:,}", f"{r['train_s']:.1f}", f"{r['add_s']:.1f}",
             f"{r['search_s_per_query'] * 1e3:.2f}", f"{r['search_all_s'] / 3600:.2f}",
             f"{r['recall']:.3f}" if "recall" in r else "1 (exact)", f"{r['index_gib']:.2f}", f"{r['peak_gib']:.1f}"]
            for r in runs]
    record("Mining: FAISS search, exact vs IVF vs IVF-PQ (random unit vectors, d=768)",
           f"k={K}, IVF nlist={a.nlist}, PQ m={a.pq_m} x 8 bits; {a.queries} queries timed, scaled to n queries (every "
           f"image queries its neighbours); recall@{K} against exact search on {a.recall_queries} of them; index GiB: "
           "the vectors or codes and ids; peak GiB: the process, vectors generated 100K at a time\n\n"
           + table(["index", "vectors", "train s", "add s", "search ms/query", "search all n (h)", f"recall@{K}",
                    "index GiB", "peak GiB"], rows))
    return runs


if __name__ == "__main__":
    main()
