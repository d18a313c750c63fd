"""`mine(cfg)`: the body of `mine.py` (list, embed, search, write)."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import numpy as np

from omegaconf import OmegaConf

from ..errors import refuse_finished
from ..model.presets import tiny_encoder
from ..evaluation.benchmarks.synthetic import synthetic_benchmark_root
from .embed import Embedded, embed_all
from .outputs import (write_benchmark_skeleton, write_contact_sheet, write_duplicates, write_near_duplicates,
                      write_pairs, write_review, write_summary)
from .search import (blind_files, candidate_files, cap_per_image, count_rows, in_order, is_copy, thumbnail,
                     write_blind_pairs, write_candidates)
from .settings import check_settings
from .sources import ImageList, SourceError, iter_images


def search_on_every_rank(folder: Path, clip, dino, keys, cfg, ran: dict) -> tuple[list[Path], int] | None:
    """Each rank searches its block of query images against the whole index and streams its candidate pairs to
    `search/` (`write_candidates`); then each scores its share of the buckets of blind pairs (`write_blind_pairs`).
    Rank 0 returns every bucket's file and how many blind pairs they hold, the others None."""
    index = OmegaConf.to_container(cfg.index, resolve=True)
    write_candidates(folder, clip, cfg.k, cfg.clip_threshold, ran["rank"], ran["world"], **index)
    ran["barrier"]("mof-search")   # every rank's candidates are written
    candidates = [f for r in range(ran["world"]) for f in candidate_files(folder, len(clip), r, ran["world"])]
    write_blind_pairs(candidates, folder, clip, dino, cfg.dino_threshold, keys, rank=ran["rank"], world=ran["world"])
    ran["barrier"]("mof-blind")    # every bucket is scored
    if ran["rank"] != 0:
        return None
    blind = blind_files(folder, len(clip))
    return blind, count_rows(blind)


def set_aside_copies(rows, ref_of, max_diff: float | None, limit: int):
    """The first `limit` blind pairs of `rows` (`(i, j, clip cosine, dino cosine)` in order, as `search.in_order`
    gives them) that are not resized or re-encoded copies (`search.is_copy` on the images as decoded for the
    encoders), as arrays `(pairs, c, d)`, and the copies as `(i, j, largest cell difference)`. Pairs are checked in
    order until `limit` are kept (a loop over images read again, each once: bounded by `max_pairs`, not by the
    collection; `ref_of(row)` says where an image is read from). Also returns how many pairs were checked: copies
    among the pairs after them are not looked for."""
    from ..data.images import decode_image

    thumbs, kept, near = {}, [], []

    def thumb(i):
        if i not in thumbs:
            try:
                ref = ref_of(i)
                thumbs[i] = thumbnail(decode_image(io.BytesIO(ref.read_bytes()), ref.id))
            except Exception:  # noqa: BLE001 - gone since it was embedded: not a copy we can show
                thumbs[i] = None
        return thumbs[i]

    checked = 0
    for a, b, c, d in rows:
        if len(kept) >= limit:
            break
        checked += 1
        ta, tb = (None, None) if max_diff is None else (thumb(a), thumb(b))
        if ta is not None and tb is not None and is_copy(ta, tb, max_diff):
            near.append((a, b, round(float(abs(ta - tb).max()), 4)))
        else:
            kept.append((a, b, c, d))
    pairs = np.asarray([(a, b) for a, b, _, _ in kept], dtype=np.int64).reshape(-1, 2)
    c, d = (np.asarray([r[n] for r in kept], dtype=np.float32) for n in (2, 3))
    return pairs, c, d, near, checked if max_diff is not None else 0


def mine(cfg) -> dict | None:
    check_settings(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    refuse_finished(out, ["summary.json", "pairs.csv"], cfg.get("overwrite") is True)  # matching embeddings are reused
    timing, t0 = {}, time.perf_counter()
    spec = str(cfg.images)
    if spec == "synthetic":
        spec = str(synthetic_benchmark_root(cfg.paths.data_dir, pairs_per_pattern=cfg.synthetic.pairs_per_pattern)
                   / "MMVP Images")
    # listed a shard at a time into embeddings/list/ (every rank lists the same images, and rewrites no file)
    images = ImageList.write(iter_images(spec, cfg.get("image_root")), out / "embeddings" / "list", cfg.shard_size)
    if images.set_aside:
        print(f"mine: {images.set_aside} images skipped: their file names are not UTF-8 (the first: "
              f"{os.fsencode(images.first_set_aside)!r})", file=sys.stderr)
    if not len(images):
        raise SourceError(f"images: no images found in {cfg.images}")
    timing["list_s"] = time.perf_counter() - t0
    # `encoders=tiny` (both) or `encoders.clip=tiny`: the tiny CLIP and DINO that mof pre-trains and ships
    chosen = {"clip": "tiny", "dino": "tiny"} if cfg.encoders == "tiny" else cfg.encoders
    encoders = {kind: tiny_encoder(kind, ref) for kind, ref in chosen.items()}
    t0 = time.perf_counter()
    ran = embed_all(images, out / "embeddings", encoders, cfg.shard_size, cfg.batch_size, cfg.num_workers,
                    OmegaConf.to_container(cfg.trainer, resolve=True))
    timing["embed_s"] = time.perf_counter() - t0
    embedded = Embedded(out / "embeddings", ran["shards"], images)
    skipped = {**embedded.skipped, **({"name_not_utf8": images.set_aside} if images.set_aside else {})}
    t0 = time.perf_counter()
    searched_by_ranks = search_on_every_rank(out / "search", embedded.clip, embedded.dino, embedded.keys, cfg, ran)
    if searched_by_ranks is None:   # not rank 0: its part of the search and of the scoring is written
        return None
    blind, searched = searched_by_ranks   # on disk; the best `max_pairs` (less copies) are read back in order
    pairs, c, d, near, checked = set_aside_copies(in_order(blind), lambda i: embedded.refs([i])[0],
                                                  cfg.near_duplicate_max_diff, cfg.max_pairs)
    found = searched - len(near)   # copies are looked for until max_pairs pairs are kept: `copies_checked` says how far
    shown = cap_per_image(pairs, cfg.review.max_pairs_per_image)   # review, contact sheet and benchmark
    timing["search_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # the names of the rows written (pairs, copies, identical files), looked up shard by shard
    groups = embedded.identical_files()
    rows = np.unique(np.concatenate([pairs.reshape(-1), np.asarray([r for a, b, _ in near for r in (a, b)], np.int64),
                                     np.asarray([r for g in groups for r in g], np.int64)]))
    ids = dict(zip(rows.tolist(), embedded.ids(rows)))
    by_id = {r.id: r for r in embedded.refs(np.unique(pairs[shown]))}
    write_pairs(out, ids, pairs, c, d)
    duplicates = write_duplicates(out, [[ids[r] for r in g] for g in groups])
    write_near_duplicates(out, ids, near)
    reviewed = write_review(out, by_id, ids, pairs[shown], c[shown], d[shown], cfg.review.max_pairs, cfg.review.per_page,
                            found=len(pairs))
    write_contact_sheet(out, by_id, ids, pairs[shown], c[shown], d[shown], cfg.review.contact_sheet)
    benchmark = write_benchmark_skeleton(out, by_id, ids, pairs[shown], cfg.benchmark_pairs)
    timing["write_s"] = time.perf_counter() - t0
    summary = {"images": str(cfg.images), "image_list": spec, "image_root": cfg.get("image_root"), "encoders": encoders,
               "images_seen": len(images) + images.set_aside, "embedded": len(embedded),
               "skipped": skipped, "shards": ran["shards"], "shards_computed": ran["pending"],
               "shards_recomputed": ran.get("recomputed", {}),
               "clip_threshold": cfg.clip_threshold, "dino_threshold": cfg.dino_threshold, "k": cfg.k, "search_ranks": ran["world"],
               "pairs_found": found, "pairs_written": len(pairs), "duplicate_groups": len(duplicates),
               "duplicate_images": sum(len(g) for g in duplicates), "near_duplicate_pairs": len(near),
               "copies_checked": checked,
               "review_pairs": reviewed, "max_pairs_per_image": cfg.review.max_pairs_per_image,
               "benchmark": {"folder": str(out / "benchmark"), **benchmark}, "timing": timing}
    write_summary(out, summary)
    partly = checked < searched and cfg.near_duplicate_max_diff is not None
    unchecked = f" (copies looked for among the first {checked})" if partly else ""
    print(f"mine: {len(embedded)} images embedded ({sum(skipped.values())} skipped), {found} CLIP-blind pairs{unchecked}, "
          f"{len(duplicates)} groups of identical files, {len(near)} near-duplicate pairs set aside; "
          f"{out}/pairs.csv, review.html, benchmark/")
    return summary
