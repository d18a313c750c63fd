"""Mining's stages after embedding, on `--n` embeddings written as mine.py writes them, each stage's time and peak
memory: what a large collection costs once it is embedded.

The CLIP embeddings are the mixture fitted to the tiny CLIP's (bench/mining_recall.py: clusters and widths of
real embeddings); the DINO ones are independent random unit vectors, so every CLIP-near pair is also DINO-far and
the pair stages see as many pairs as the search can give (a worst case for their memory). Shards are float16, as
mine.py writes them (`embeddings/{clip,dino}/NNNNN.npy`, `ids/NNNNN.json`), `--shard-size` images each.

The stages are mine.py's own functions: the image list (`--n` paths in a text file) is written a shard at a time
to disk (`ImageList.write`, against the same list held in memory as before), the shards are read back with a key
per file (`Embedded`), the search streams each query chunk's CLIP-near pairs to disk
(`write_candidates`), the blind pairs are scored a bucket of first images at a time and written sorted
(`write_blind_pairs`, here on one rank), the best `--max-pairs` are read back in order (`in_order`) and their ids
looked up by row. Recall is the share of the CLIP-near pairs among `--recall-queries` sampled queries' exact k
nearest neighbours that the search wrote.

Peak memory is the process's resident memory sampled every 50 ms during the stage, less what it held before; the
"whole matrices" row loads both encoders' embeddings into memory as mof did before (for comparison). Disk is what the
stage wrote.

    python bench/mining_memory.py [--n 1000000] [--nlist 1024] [--nprobe 8] [--until load|all]
"""

from __future__ import annotations

import argparse
import hashlib
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
        hashes = [hashlib.sha1(i.encode()).hexdigest() for i in ids]   # as embedding hashes each file's bytes
        (folder / "ids" / f"{s:05d}.json").write_text(json.dumps({"ids": ids, "hashes": hashes, "skipped": {}}))
    return shards


def disk_gib(paths) -> float:
    return sum(Path(p).stat().st_size for p in paths) / 2**30


def pair_recall(clip, files: list, queries: int, k: int, threshold: float, seed: int = 0) -> tuple[float, int]:
    """Of the pairs (q, j) with j among query q's exact k nearest neighbours and a CLIP cosine over `threshold`,
    for sampled queries q: the share the search wrote (from q's own chunk file, one rank)."""
    rng = np.random.default_rng(seed)
    qs = np.sort(rng.choice(len(clip), min(queries, len(clip)), replace=False))
    q = clip[qs]
    best = np.full((len(qs), k + 1), -np.inf, np.float32)
    who = np.zeros((len(qs), k + 1), np.int64)
    for start in range(0, len(clip), 65536):   # exact: every vector
        sims = q @ clip[start:start + 65536].T
        both = np.concatenate([best, sims], axis=1)
        ids = np.concatenate([who, np.broadcast_to(np.arange(start, start + sims.shape[1]), sims.shape)], axis=1)
        top = np.argpartition(-both, k, axis=1)[:, :k + 1]
        best, who = np.take_along_axis(both, top, 1), np.take_along_axis(ids, top, 1)
    wanted = found = 0
    for row, query in enumerate(qs):
        truth = {int(j) for j, s in zip(who[row], best[row]) if j != query and s > threshold}
        pairs = np.load(files[query // 65536], mmap_mode="r")   # write_candidates' query chunks, one rank
        mine = set(pairs[1][pairs[0] == query].tolist()) | set(pairs[0][pairs[1] == query].tolist())
        wanted, found = wanted + len(truth), found + len(truth & mine)
    return found / max(wanted, 1), wanted


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--images", type=int, default=4000, help="tiny CLIP embeddings the mixture is fitted to")
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", type=int, default=8)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--clip-threshold", type=float, default=0.95)
    p.add_argument("--max-pairs", type=int, default=1000)
    p.add_argument("--recall-queries", type=int, default=1000)
    p.add_argument("--until", choices=["load", "all"], default="all",
                   help="load: stop after listing and loading (the stages the image list is in)")
    args = p.parse_args()

    from mof.mining.embed import Embedded
    from mof.mining.search import count_rows, in_order, write_blind_pairs, write_candidates
    from mof.mining.sources import ImageList, iter_images, list_images

    mixture = Mixture(tiny_clip_embeddings(args.images))
    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = folder / "images.txt"
        with open(paths, "w") as f:   # a collection as a text file of paths, one a line
            for start in range(0, args.n, 65536):
                f.write("".join(f"laion/{i // 10000:05d}/{i:09d}.jpg\n" for i in range(start, min(args.n, start + 65536))))
        with PeakMemory() as m:
            images = ImageList.write(iter_images(str(paths)), folder / "list", args.shard_size)
        rows.append([f"list {len(images):,} images from a text file of paths, a shard at a time to disk", f"{m.seconds:.1f}",
                     f"{m.gib:.2f}", f"{disk_gib((folder / 'list').iterdir()):.2f}"])
        with PeakMemory() as m:
            whole = list_images(str(paths))
        rows.append(["for comparison: the same list held in memory (as mine.py did before)", f"{m.seconds:.1f}",
                     f"{m.gib:.2f}", "0"])
        del whole
        with PeakMemory() as m:
            shards = write_shards(folder, args.n, args.shard_size, mixture)
        written = disk_gib(f for kind in ("clip", "dino", "ids") for f in (folder / kind).iterdir())
        rows.append(["write shards (float16, as embedding does)", f"{m.seconds:.1f}", f"{m.gib:.2f}", f"{written:.2f}"])
        with PeakMemory() as m:
            embedded = Embedded(folder, shards)
            clip, dino, keys = embedded.clip, embedded.dino, embedded.keys
        rows.append([f"load {shards} shards (memory-mapped, a 64-bit key per file; ids looked up by row)",
                     f"{m.seconds:.1f}", f"{m.gib:.2f}", "0"])
        with PeakMemory() as m:
            whole = [np.asarray(clip), np.asarray(dino)]
        rows.append(["for comparison: both matrices loaded whole (float32)", f"{m.seconds:.1f}", f"{m.gib:.2f}", "0"])
        del whole
        if args.until == "load":
            record(f"Mining: listing and loading {args.n:,} images (time, peak memory, disk)",
                   table(["stage", "s", "peak GiB above the start", "disk GiB written"], rows),
                   f"The stages up to the search ({(time.perf_counter() - t_all) / 60:.1f} min in all).")
            return
        index = {"flat_max": args.n - 1, "nlist": args.nlist, "nprobe": args.nprobe}   # IVF whatever n
        with PeakMemory() as m:
            files = write_candidates(folder / "search", clip, args.k, args.clip_threshold, **index)
        found = sum(np.load(f, mmap_mode="r").shape[1] for f in files)
        rows.append([f"search: IVF-Flat nlist {args.nlist}, nprobe {args.nprobe}, k {args.k}, every image a query, "
                     f"near pairs streamed to disk ({found:,} found, some twice)", f"{m.seconds:.1f}", f"{m.gib:.2f}",
                     f"{disk_gib(files):.2f}"])
        with PeakMemory() as m:
            blind = write_blind_pairs(files, folder / "search", clip, dino, 0.6, keys)
            total = count_rows(blind)
        rows.append([f"blind pairs: exact cosines of both encoders, a bucket at a time, sorted ({total:,} pairs)",
                     f"{m.seconds:.1f}", f"{m.gib:.2f}", f"{disk_gib(blind):.2f}"])
        with PeakMemory() as m:
            best = [row for _, row in zip(range(args.max_pairs), in_order(blind))]
        rows.append([f"the best {len(best):,} pairs read back in order (a merge of {len(blind)} buckets)",
                     f"{m.seconds:.1f}", f"{m.gib:.2f}", "0"])
        with PeakMemory() as m:
            names = embedded.ids(np.asarray([(a, b) for a, b, _, _ in best], np.int64))
        rows.append([f"their {len(names):,} ids looked up by row (the shards they fall in read, 8 kept)",
                     f"{m.seconds:.1f}", f"{m.gib:.2f}", "0"])
        with PeakMemory() as m:
            recall, wanted = pair_recall(clip, files, args.recall_queries, args.k, args.clip_threshold)
        minutes = (time.perf_counter() - t_all) / 60
    d = mixture.centres.shape[1]
    record(f"Mining: the stages after embedding, {args.n:,} images (time, peak memory, disk)",
           table(["stage", "s", "peak GiB above the start", "disk GiB written"], rows),
           f"{d}-d embeddings (the tiny CLIP's width; for CLIP-L's 768 the shards, the index and the gathers of the "
           f"cosine stages scale by {768 // d}, the pair files do not); the index holds the vectors "
           f"({args.n * d * 4 / 2**30:.2f} GiB as float32): IVF-PQ (`index.pq_m`) holds codes instead. The rest is "
           f"bounded by the shard, query chunk and bucket sizes, not by the collection. Recall of the CLIP-near pairs "
           f"among {args.recall_queries} sampled queries' exact {args.k} nearest neighbours: {recall:.3f} "
           f"({wanted:,} pairs; measured in {m.seconds:.0f} s after the table). {minutes:.1f} min in all.")


if __name__ == "__main__":
    main()
