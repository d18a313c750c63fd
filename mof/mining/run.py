"""`mine(cfg)`: the body of `mine.py` (list, embed, search, write)."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import OmegaConf

from ..errors import refuse_finished
from ..model.presets import TINY_ENCODERS
from ..evaluation.benchmarks.synthetic import synthetic_benchmark_root
from .embed import atomic_write, embed_all, load_phashes, load_shards
from .outputs import (write_benchmark_skeleton, write_contact_sheet, write_duplicates, write_near_duplicates,
                      write_pairs, write_review, write_summary)
from .search import blind_pairs, cap_per_image, clip_candidates
from .settings import check_settings
from .sources import SourceError, list_images


def search_on_every_rank(folder: Path, clip, k: int, threshold: float, index: dict, ran: dict):
    """Each rank searches its block of query images against the whole index and writes its candidate pairs
    (`search/candidates-RRRRR.npy`); rank 0 returns their union, the others None."""
    import numpy as np

    mine_part = clip_candidates(clip, k, threshold, rank=ran["rank"], world=ran["world"], **index)
    atomic_write(folder / f"candidates-{ran['rank']:05d}.npy", lambda f: np.save(f, mine_part))
    ran["barrier"]("mof-search")   # every rank's candidates are written
    if ran["rank"] != 0:
        return None
    parts = [np.load(folder / f"candidates-{r:05d}.npy") for r in range(ran["world"])]
    return np.unique(np.concatenate(parts), axis=0) if sum(map(len, parts)) else np.zeros((0, 2), dtype=np.int64)


def mine(cfg) -> dict | None:
    check_settings(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    refuse_finished(out, ["summary.json", "pairs.csv"], cfg.get("overwrite") is True)  # embeddings are always reused
    timing, t0 = {}, time.perf_counter()
    spec = str(cfg.images)
    if spec == "synthetic":
        spec = str(synthetic_benchmark_root(cfg.paths.data_dir, pairs_per_pattern=cfg.synthetic.pairs_per_pattern)
                   / "MMVP Images")
    refs = list_images(spec, cfg.get("image_root"))
    if not refs:
        raise SourceError(f"images: no images found in {cfg.images}")
    timing["list_s"] = time.perf_counter() - t0
    # `encoders=tiny` (both) or `encoders.clip=tiny`: the tiny CLIP and DINO that mof pre-trains and ships
    chosen = {"clip": "tiny", "dino": "tiny"} if cfg.encoders == "tiny" else cfg.encoders
    encoders = {kind: TINY_ENCODERS[kind] if ref == "tiny" else str(ref) for kind, ref in chosen.items()}
    t0 = time.perf_counter()
    ran = embed_all(refs, out / "embeddings", encoders, cfg.shard_size, cfg.batch_size, cfg.num_workers,
                    OmegaConf.to_container(cfg.trainer, resolve=True))
    timing["embed_s"] = time.perf_counter() - t0
    ids, hashes, skipped, clip, dino = load_shards(out / "embeddings", ran["shards"])
    t0 = time.perf_counter()
    index = OmegaConf.to_container(cfg.index, resolve=True)
    candidates = search_on_every_rank(out / "search", clip, cfg.k, cfg.clip_threshold, index, ran)
    if candidates is None:   # not rank 0: its part of the search is written
        return None
    near = []
    pairs, c, d = blind_pairs(clip, dino, cfg.clip_threshold, cfg.dino_threshold, cfg.k, exclude_same=hashes,
                              phashes=load_phashes(out / "embeddings", ran["shards"]),
                              near_duplicate_bits=cfg.near_duplicate_bits, near_duplicates=near, candidates=candidates)
    found = len(pairs)
    pairs, c, d = pairs[:cfg.max_pairs], c[:cfg.max_pairs], d[:cfg.max_pairs]
    shown = cap_per_image(pairs, cfg.review.max_pairs_per_image)   # review, contact sheet and benchmark
    timing["search_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    by_id = {r.id: r for r in refs}
    write_pairs(out, ids, pairs, c, d)
    duplicates = write_duplicates(out, ids, hashes)
    write_near_duplicates(out, ids, near)
    reviewed = write_review(out, by_id, ids, pairs[shown], c[shown], d[shown], cfg.review.max_pairs, cfg.review.per_page,
                            found=len(pairs))
    write_contact_sheet(out, by_id, ids, pairs[shown], c[shown], d[shown], cfg.review.contact_sheet)
    benchmark = write_benchmark_skeleton(out, by_id, ids, pairs[shown], cfg.benchmark_pairs)
    timing["write_s"] = time.perf_counter() - t0
    summary = {"images": str(cfg.images), "encoders": encoders, "images_seen": len(refs), "embedded": len(ids),
               "skipped": skipped, "shards": ran["shards"], "shards_computed": ran["pending"],
               "shards_recomputed": ran.get("recomputed", {}),
               "clip_threshold": cfg.clip_threshold, "dino_threshold": cfg.dino_threshold, "k": cfg.k, "search_ranks": ran["world"],
               "pairs_found": found, "pairs_written": len(pairs), "duplicate_groups": len(duplicates),
               "duplicate_images": sum(len(g) for g in duplicates), "near_duplicate_pairs": len(near),
               "review_pairs": reviewed, "max_pairs_per_image": cfg.review.max_pairs_per_image,
               "benchmark": {"folder": str(out / "benchmark"), **benchmark}, "timing": timing}
    write_summary(out, summary)
    print(f"mine: {len(ids)} images embedded ({sum(skipped.values())} skipped), {found} CLIP-blind pairs, "
          f"{len(duplicates)} groups of identical files, {len(near)} near-duplicate pairs set aside; "
          f"{out}/pairs.csv, review.html, benchmark/")
    return summary
