"""Mining's stages after embedding, on `--n` embeddings written as mine.py writes them, each stage's time and peak
memory: what a large collection costs once it is embedded.

The CLIP embeddings are the mixture fitted to the tiny CLIP's (bench/mining_recall.py: clusters and widths of
real embeddings); the DINO ones are independent random unit vectors, so every CLIP-near pair is also DINO-far and
the pair stages see as many pairs as the search can give (a worst case for their memory). Shards are float16, as
mine.py writes them (`embeddings/{clip,dino}/NNNNN.npy`, `ids/NNNNN.json`), `--shard-size` images each.

Peak memory is the process's resident memory sampled every 50 ms during the stage, less what it held before; the
"whole matrices" row loads both encoders' embeddings into memory as mof did before this bench (for comparison).

    python bench/mining_memory.py [--n 1000000] [--nlist 1024] [--nprobe 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from common import record, table
from mining_recall import Mixture, tiny_clip_embeddings


class PeakMemory:
    """The largest resident set size seen while the block runs, less the size at its start (GiB)."""

    def __enter__(self):
        self.process, self.stop = psutil.Process(), threading.Event()
        self.start = self.peak = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        self.t0 = time.perf_counter()
        return self

    def _sample(self):
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.gib = (self.peak - self.start) / 2**30


def write_shards(folder: Path, n: int, shard_size: int, mixture: Mixture) -> int:
    """`n` embeddings in mine.py's layout; returns the number of shards."""
    for kind in ("clip", "dino", "ids"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    shards = -(-n // shard_size)
    for s in range(shards):
        start, stop = s * shard_size, min(n, (s + 1) * shard_size)
        np.save(folder / "clip" / f"{s:05d}.npy", mixture.sample(start, stop).astype(np.float16))
        dino = rng.standard_normal((stop - start, mixture.centres.shape[1]), dtype=np.float32)
        np.save(folder / "dino" / f"{s:05d}.npy", (dino / np.linalg.norm(dino, axis=1, keepdims=True)).astype(np.float16))
        ids = [f"img{i:09d}.jpg" for i in range(start, stop)]
        (folder / "ids" / f"{s:05d}.json").write_text(json.dumps({"ids": ids, "hashes": ids, "skipped": {}}))
    return shards


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--images", type=int, default=4000, help="tiny CLIP embeddings the mixture is fitted to")
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", type=int, default=8)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--clip-threshold", type=float, default=0.95)
    args = p.parse_args()

    from mof.mining.embed import load_shards
    from mof.mining.search import blind_pairs, clip_candidates

    mixture = Mixture(tiny_clip_embeddings(args.images))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with PeakMemory() as m:
            shards = write_shards(folder, args.n, args.shard_size, mixture)
        rows.append(["write shards (float16, as embedding does)", f"{m.seconds:.1f}", f"{m.gib:.2f}"])
        with PeakMemory() as m:
            ids, hashes, _, clip, dino = load_shards(folder, shards)
        rows.append([f"load {shards} shards (memory-mapped)", f"{m.seconds:.1f}", f"{m.gib:.2f}"])
        with PeakMemory() as m:
            whole = [np.asarray(clip), np.asarray(dino)]
        rows.append(["for comparison: both matrices loaded whole (float32)", f"{m.seconds:.1f}", f"{m.gib:.2f}"])
        del whole
        index = {"flat_max": args.n - 1, "nlist": args.nlist, "nprobe": args.nprobe}   # IVF whatever n
        with PeakMemory() as m:
            candidates = clip_candidates(clip, args.k, args.clip_threshold, **index)
        rows.append([f"search: IVF-Flat nlist {args.nlist}, nprobe {args.nprobe}, k {args.k}, every image a query "
                     f"({len(candidates):,} CLIP-near pairs)", f"{m.seconds:.1f}", f"{m.gib:.2f}"])
        with PeakMemory() as m:
            pairs, _, _ = blind_pairs(clip, dino, args.clip_threshold, 0.6, args.k, exclude_same=hashes,
                                      candidates=candidates)
        rows.append([f"blind pairs: exact cosines of both encoders, sorted ({len(pairs):,} pairs)",
                     f"{m.seconds:.1f}", f"{m.gib:.2f}"])
    d = mixture.centres.shape[1]
    record(f"Mining: the stages after embedding, {args.n:,} images (time and peak memory)",
           table(["stage", "s", "peak GiB above the start"], rows),
           f"{d}-d embeddings (the tiny CLIP's width; 768 for CLIP-L multiplies every GiB figure by {768 // d}); "
           f"the index holds the vectors ({args.n * d * 4 / 2**30:.2f} GiB as float32): IVF-PQ (`index.pq_m`) holds "
           "codes instead. The rest is bounded by the shard and query chunk sizes, not by the collection.")


if __name__ == "__main__":
    main()
