"""The embedding stage: every image through both encoders, written as shards (`embeddings/{clip,dino}/NNNNN.npy`,
float16, and `embeddings/ids/NNNNN.json`: ids, file hashes, skips). A shard whose files exist is never computed
again, so a killed run resumes where it stopped. Runs as Lightning `Trainer.predict` with a prediction writer, on
`trainer.devices` x `trainer.num_nodes` (each shard goes to one rank)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from ..data.images import ImageError, decode_image
from .embedders import Embedder
from .sources import ImageRef

KINDS = ("clip", "dino")


def shard_done(out: Path, shard: int) -> bool:
    return (out / "ids" / f"{shard:05d}.json").is_file()


class Shards(Dataset):
    """Item k: the k-th pending shard's images, decoded and prepared for both encoders (unreadable ones skipped)."""

    def __init__(self, refs: list[ImageRef], shard_size: int, pending: list[int], processors: dict):
        self.refs, self.shard_size, self.pending, self.processors = refs, shard_size, pending, processors

    def __len__(self) -> int:
        return len(self.pending)

    def __getitem__(self, k: int) -> dict:
        shard = self.pending[k]
        images, ids, hashes, skipped = [], [], [], Counter()
        for ref in self.refs[shard * self.shard_size:(shard + 1) * self.shard_size]:
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
    def __init__(self, embedders: dict[str, Embedder], batch_size: int):
        super().__init__()
        self.embedders = torch.nn.ModuleDict(embedders)
        self.batch_size = batch_size

    def predict_step(self, item: dict, batch_idx: int = 0) -> dict:
        out = {k: item[k] for k in ("shard", "ids", "hashes", "skipped")}
        for kind, embedder in self.embedders.items():
            pixels = item["pixels"][kind]
            if pixels is None:
                out[kind] = np.zeros((0, 0), dtype=np.float16)
                continue
            chunks = [embedder(pixels[i:i + self.batch_size].to(self.device)) for i in range(0, len(pixels), self.batch_size)]
            out[kind] = torch.cat(chunks).cpu().numpy().astype(np.float16)
        return out


class ShardWriter(BasePredictionWriter):
    """Writes each shard as it is computed; the ids file goes last and marks the shard complete."""

    def __init__(self, out: Path):
        super().__init__(write_interval="batch")
        self.out = out

    def write_on_batch_end(self, trainer, module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        shard = prediction["shard"]
        for kind in KINDS:
            _atomic(self.out / kind / f"{shard:05d}.npy", lambda f: np.save(f, prediction[kind]))
        record = {k: prediction[k] for k in ("ids", "hashes", "skipped")}
        _atomic(self.out / "ids" / f"{shard:05d}.json", lambda f: f.write(json.dumps(record).encode()))


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def embed_all(refs: list[ImageRef], out: Path, encoders: dict[str, str], shard_size: int, batch_size: int,
              num_workers: int, trainer_kwargs: dict) -> dict:
    """Embed the pending shards; returns what ran (`shards`, `pending`)."""
    n_shards = (len(refs) + shard_size - 1) // shard_size
    pending = [s for s in range(n_shards) if not shard_done(out, s)]
    if pending:
        embedders = {kind: Embedder(ref) for kind, ref in encoders.items()}
        data = Shards(refs, shard_size, pending, {k: e.processor for k, e in embedders.items()})
        loader = DataLoader(data, batch_size=None, num_workers=num_workers)
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False,
                             callbacks=[ShardWriter(out)], **trainer_kwargs)
        trainer.predict(EmbedModule(embedders, batch_size), dataloaders=loader, return_predictions=False)
        trainer.strategy.barrier("mof-embed")  # every rank's shards are written
        if not trainer.is_global_zero:
            return {"shards": n_shards, "pending": len(pending), "rank": trainer.global_rank}
    return {"shards": n_shards, "pending": len(pending), "rank": 0}


def load_shards(out: Path, n_shards: int) -> tuple[list[str], list[str], dict, np.ndarray, np.ndarray]:
    """ids, hashes, skip counts and both embedding matrices (float32) of all shards, in order."""
    ids, hashes, skipped, mats = [], [], Counter(), {k: [] for k in KINDS}
    for s in range(n_shards):
        record = json.loads((out / "ids" / f"{s:05d}.json").read_text())
        ids += record["ids"]
        hashes += record["hashes"]
        skipped.update(record["skipped"])
        for kind in KINDS:
            m = np.load(out / kind / f"{s:05d}.npy")
            if len(m):
                mats[kind].append(m)
    stack = {k: np.concatenate(v).astype(np.float32) if v else np.zeros((0, 1), np.float32) for k, v in mats.items()}
    return ids, hashes, dict(skipped), stack["clip"], stack["dino"]
