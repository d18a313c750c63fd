"""`mine(cfg)`: the body of `mine.py` (list, embed, search, write)."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import OmegaConf

from ..errors import refuse_finished
from ..model.presets import TINY_ENCODERS
from ..evaluation.benchmarks.synthetic import synthetic_benchmark_root
from .embed import embed_all, load_shards
from .outputs import (write_benchmark_skeleton, write_contact_sheet, write_duplicates, write_pairs, write_review,
                      write_summary)
from .search import blind_pairs
from .settings import check_settings
from .sources import SourceError, list_images


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
    if ran["rank"] != 0:
        return None
    ids, hashes, skipped, clip, dino = load_shards(out / "embeddings", ran["shards"])
    t0 = time.perf_counter()
    pairs, c, d = blind_pairs(clip, dino, cfg.clip_threshold, cfg.dino_threshold, cfg.k, exclude_same=hashes,
                              **OmegaConf.to_container(cfg.index, resolve=True))
    found = len(pairs)
    pairs, c, d = pairs[:cfg.max_pairs], c[:cfg.max_pairs], d[:cfg.max_pairs]
    timing["search_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    by_id = {r.id: r for r in refs}
    write_pairs(out, ids, pairs, c, d)
    duplicates = write_duplicates(out, ids, hashes)
    shown = write_review(out, by_id, ids, pairs, c, d, cfg.review.max_pairs, cfg.review.per_page)
    write_contact_sheet(out, by_id, ids, pairs, c, d, cfg.review.contact_sheet)
    benchmark = write_benchmark_skeleton(out, by_id, ids, pairs, cfg.benchmark_pairs)
    timing["write_s"] = time.perf_counter() - t0
    summary = {"images": str(cfg.images), "encoders": encoders, "images_seen": len(refs), "embedded": len(ids),
               "skipped": skipped, "shards": ran["shards"], "shards_computed": ran["pending"],
               "clip_threshold": cfg.clip_threshold, "dino_threshold": cfg.dino_threshold, "k": cfg.k,
               "pairs_found": found, "pairs_written": len(pairs), "duplicate_groups": len(duplicates),
               "duplicate_images": sum(len(g) for g in duplicates), "review_pairs": shown,
               "benchmark": {"folder": str(out / "benchmark"), **benchmark}, "timing": timing}
    write_summary(out, summary)
    print(f"mine: {len(ids)} images embedded ({sum(skipped.values())} skipped), {found} CLIP-blind pairs, "
          f"{len(duplicates)} groups of identical files; {out}/pairs.csv, review.html, benchmark/")
    return summary
