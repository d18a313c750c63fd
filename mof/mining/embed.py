"""The embedding stage: every image of the run's list (`embeddings/list/`, `sources.ImageList`) through both
encoders, written as shards (`embeddings/{clip,dino}/NNNNN.npy`, float16, and `embeddings/ids/NNNNN.json`: ids,
file hashes, skips, and the keys below). Runs as Lightning `Trainer.predict` with a prediction writer, on
`trainer.devices` x `trainer.num_nodes` (each shard goes to one rank). `Embedded` reads it all back without holding
the collection's names: rows memory-mapped, one 64-bit key per file, names looked up by row.

Resume: a shard is reused only if it was computed from the same images in the same order (a hash of its image ids)
by the same setup (a hash of the shard size and of each encoder's weights, config and preprocessing); any other
shard is computed again, so a killed run resumes where it stopped and a changed image list or encoder is never
mixed with old embeddings. `embeddings/manifest.json` records the setup and the image list of the last run."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter, OrderedDict
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from ..atomic import write_file
from ..data.images import ImageError, decode_image
from .embedders import Embedder
from .search import file_keys
from .sources import ImageList, ImageRef, recent

KINDS = ("clip", "dino")
RECORD_VERSION = 1  # the layout of a shard's ids file; a change recomputes old shards


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def shard_state(out: Path, shard: int, images_key: str, setup_key: str) -> str:
    """`done` (reusable), `missing`, or why its files cannot be reused (`images changed`, `setup changed`)."""
    path = out / "ids" / f"{shard:05d}.json"
    if not path.is_file():
        return "missing"
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "unreadable"
    if record.get("setup") != setup_key:
        return "setup changed"
    return "done" if record.get("images") == images_key else "images changed"


class Shards(Dataset):
    """Item k: the k-th pending shard's images, decoded and prepared for both encoders (unreadable ones skipped)."""

    def __init__(self, images: ImageList, pending: list[int], processors: dict):
        self.images, self.pending, self.processors = images, pending, processors

    def __len__(self) -> int:
        return len(self.pending)

    def __getitem__(self, k: int) -> dict:
        shard = self.pending[k]
        images, ids, hashes, skipped = [], [], [], Counter()
        for ref in self.images.shard(shard):
            try:  # decoded as training decodes: EXIF, alpha, size limits checked before decoding
                data = ref.read_bytes()
                images.append(decode_image(io.BytesIO(data), ref.id))
            except FileNotFoundError:
                skipped["missing"] += 1
                continue
            except ImageError as e:
                skipped["too_large" if e.reason == "image_too_large" else "unreadable"] += 1
                continue
            except Exception:  # noqa: BLE001 - any undecodable file is skipped and counted
                skipped["unreadable"] += 1
                continue
            ids.append(ref.id)
            hashes.append(hashlib.sha1(data).hexdigest())
        pixels = {kind: p(images=images, return_tensors="pt")["pixel_values"] if images else None
                  for kind, p in self.processors.items()}
        return {"shard": shard, "ids": ids, "hashes": hashes, "skipped": dict(skipped), "pixels": pixels}


class EmbedModule(pl.LightningModule):
    """Both encoders over a shard, `batch_size` images at a time; rank 0 shows images/s batch by batch (Lightning's
    own bar would tick once a shard)."""

    def __init__(self, embedders: dict[str, Embedder], batch_size: int, shard_sizes: list[int] | None = None):
        super().__init__()
        self.embedders = torch.nn.ModuleDict(embedders)
        self.batch_size = batch_size
        self.shard_sizes = shard_sizes or []
        self.bar = None

    def on_predict_start(self):
        if self.trainer.is_global_zero and self.shard_sizes:
            from tqdm.auto import tqdm

            mine = sum(self.shard_sizes[self.trainer.global_rank::self.trainer.world_size])  # this rank's shards
            self.bar = tqdm(total=mine, unit="img", desc="embedding", ncols=80, disable=None,
                            bar_format="{desc}: {n_fmt}/{total_fmt} images [{elapsed}<{remaining}, {rate_fmt}]")

    def on_predict_end(self):
        if self.bar is not None:
            self.bar.close()

    def predict_step(self, item: dict, batch_idx: int = 0) -> dict:
        out = {k: item[k] for k in ("shard", "ids", "hashes", "skipped")}
        for n, (kind, embedder) in enumerate(self.embedders.items()):
            pixels = item["pixels"][kind]
            if pixels is None:
                out[kind] = np.zeros((0, 0), dtype=np.float16)
                continue
            chunks = []
            for i in range(0, len(pixels), self.batch_size):
                chunks.append(embedder(pixels[i:i + self.batch_size].to(self.device)))
                if self.bar is not None and n == len(self.embedders) - 1:   # an image counts once both saw it
                    self.bar.update(len(chunks[-1]))
            out[kind] = torch.cat(chunks).cpu().numpy().astype(np.float16)
        if self.bar is not None:   # the shard's unreadable images are done too (skipped and counted)
            self.bar.update(sum(item["skipped"].values()))
        return out


class ShardWriter(BasePredictionWriter):
    """Writes each shard as it is computed; the ids file (with the shard's keys) goes last and marks it complete."""

    def __init__(self, out: Path, keys: list[str], setup_key: str):
        super().__init__(write_interval="batch")
        self.out, self.keys, self.setup_key = out, keys, setup_key

    def write_on_batch_end(self, trainer, module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        shard = prediction["shard"]
        for kind in KINDS:
            write_file(self.out / kind / f"{shard:05d}.npy", lambda f: np.save(f, prediction[kind]))
        record = {**{k: prediction[k] for k in ("ids", "hashes", "skipped")}, "images": self.keys[shard],
                  "setup": self.setup_key}
        write_file(self.out / "ids" / f"{shard:05d}.json", lambda f: f.write(json.dumps(record).encode()))




def embed_all(images: ImageList, out: Path, encoders: dict[str, str], shard_size: int, batch_size: int,
              num_workers: int, trainer_kwargs: dict) -> dict:
    """Embed the shards of `images` (listed `shard_size` a shard) not computed yet by this setup; returns what ran
    (`shards`, `pending`, `recomputed`: shards whose old files did not match, by reason)."""
    embedders = {kind: Embedder(ref) for kind, ref in encoders.items()}
    setup = {"record": RECORD_VERSION, "shard_size": shard_size,
             "encoders": {kind: e.identity() for kind, e in embedders.items()}}
    setup_key = _sha(json.dumps(setup, sort_keys=True))
    keys = images.keys
    n_shards = len(keys)
    states = [shard_state(out, s, keys[s], setup_key) for s in range(n_shards)]
    pending = [s for s, state in enumerate(states) if state != "done"]
    recomputed = dict(Counter(state for state in states if state not in ("done", "missing")))
    if recomputed:
        print(f"mine: embeddings in {out}: {sum(recomputed.values())} of {n_shards} shards computed again ("
              + ", ".join(f"{n} {why}" for why, n in recomputed.items()) + "); old embeddings are never mixed in")
    # the trainer is made even when every shard is reused: its launcher starts the ranks that share the search
    data = Shards(images, pending, {k: e.processor for k, e in embedders.items()})
    loader = DataLoader(data, batch_size=None, num_workers=num_workers if pending else 0)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False, callbacks=[ShardWriter(out, keys, setup_key)], **trainer_kwargs)
    sizes = [images.sizes[s] for s in pending]
    trainer.predict(EmbedModule(embedders, batch_size, sizes), dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier("mof-embed")      # every rank's shards are written
    ran = {"shards": n_shards, "pending": len(pending), "recomputed": recomputed, "rank": trainer.global_rank,
           "world": trainer.world_size, "barrier": trainer.strategy.barrier}
    if not trainer.is_global_zero:
        return ran
    manifest = {"version": 1, "images": {"count": len(images), "ids_sha256": images.ids_sha256},
                "shards": n_shards, **setup, "setup_sha256": setup_key}
    write_file(out / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return ran


class ShardedRows:
    """The rows of every shard of one encoder as one read-only float32 matrix, each shard memory-mapped: reading rows
    costs the rows read, never the collection (10M x 768 float16 is 15 GB on disk, and stays there). Indexing takes
    an int, a slice or an array of rows; `blocks()` yields the shards in order (for adding to an index)."""

    def __init__(self, paths: list[Path]):
        parts = [np.load(p, mmap_mode="r") for p in paths]
        self.parts = [m for m in parts if len(m)]
        self.offsets = np.cumsum([0] + [len(m) for m in self.parts])
        self.shape = (int(self.offsets[-1]), self.parts[0].shape[1] if self.parts else 1)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows):
        if isinstance(rows, (int, np.integer)):
            return self[np.asarray([rows])][0]
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(len(self)))
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows {rows.min()}..{rows.max()} of a matrix of {len(self)}")
        out = np.empty((len(rows), self.shape[1]), np.float32)
        order = np.argsort(rows, kind="stable")   # file order: shard by shard, each read front to back
        ordered = rows[order]
        bounds = np.searchsorted(ordered, self.offsets)   # where each shard's rows begin among them
        for s, part in enumerate(self.parts):
            lo, hi = bounds[s], bounds[s + 1]
            if lo < hi:
                out[order[lo:hi]] = part[ordered[lo:hi] - self.offsets[s]]
        return out

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def blocks(self):
        for start, part in zip(self.offsets[:-1], self.parts):
            yield int(start), np.asarray(part, dtype=np.float32)


class Embedded:
    """What embedding wrote, read back without holding the collection's names: both encoders' rows memory-mapped
    (`clip`, `dino`), a 64-bit key per file (`keys`, 8 bytes an image), and the skip counts. Ids, file hashes and
    where each image is read from are looked up by row (`ids`, `hashes`, `refs`), reading only the shards the rows
    fall in (the last `cache` shards read are kept)."""

    def __init__(self, out: Path, n_shards: int, images: ImageList | None = None, cache: int = 8):
        self.out, self.images, self.cache = Path(out), images, cache
        self._records: OrderedDict[int, dict] = OrderedDict()
        counts, keys, skipped = [], [], Counter()
        for s in range(n_shards):   # one pass over the ids files, none of them kept
            record = json.loads((self.out / "ids" / f"{s:05d}.json").read_text())
            counts.append(len(record["ids"]))
            keys.append(file_keys(record["hashes"]))
            skipped.update(record["skipped"])
        self.offsets = np.cumsum([0] + counts)
        self.keys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        self.skipped = dict(skipped)
        self.clip, self.dino = (ShardedRows([self.out / kind / f"{s:05d}.npy" for s in range(n_shards)]) for kind in KINDS)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _record(self, shard: int) -> dict:
        return recent(self._records, shard, lambda s: json.loads((self.out / "ids" / f"{s:05d}.json").read_text()),
                      self.cache)

    def _field(self, rows, name: str) -> list:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows {rows.min()}..{rows.max()} of {len(self)} embedded images")
        shards = np.searchsorted(self.offsets, rows, side="right") - 1
        out = [None] * len(rows)
        for s in np.unique(shards).tolist():   # each shard read once, its rows taken together
            at = np.flatnonzero(shards == s)
            values = self._record(s)[name]
            for n, r in zip(at.tolist(), (rows[at] - self.offsets[s]).tolist()):
                out[n] = values[r]
        return out

    def ids(self, rows) -> list[str]:
        return self._field(rows, "ids")

    def hashes(self, rows) -> list[str]:
        return self._field(rows, "hashes")

    def refs(self, rows) -> list[ImageRef]:
        """Where each row's image is read from (the run's `ImageList`: its shard s is embedded shard s)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        shards = np.searchsorted(self.offsets, rows, side="right") - 1
        return [self.images.by_id(int(s))[i] for s, i in zip(shards, self.ids(rows))]

    def identical_files(self) -> list[list[int]]:
        """The groups of rows whose files are the same bytes (equal SHA-1), each in row order, ordered by their first
        row: a sort of the 64-bit keys, then the full hashes of the rows whose keys are equal."""
        order = np.argsort(self.keys, kind="stable")
        keys = self.keys[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
        sizes = np.diff(np.r_[starts, len(keys)])
        groups = []
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            rows = np.sort(order[start:start + size])
            by_hash: dict[str, list[int]] = {}
            for row, h in zip(rows.tolist(), self.hashes(rows)):
                by_hash.setdefault(h, []).append(row)
            groups += [g for g in by_hash.values() if len(g) > 1]
        return sorted(groups)
