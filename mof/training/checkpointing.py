"""Atomic checkpoint files, and resume-checkpoint contents (trainable weights, RNG states)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `X.ckpt.tmp`, fsyncs, then renames onto `X.ckpt`: a kill during a save leaves the
    previous checkpoint whole."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        fs = get_filesystem(str(path))
        fs.makedirs(str(path.parent), exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def trainable_state(module: torch.nn.Module, state_dict: dict, prefix: str = "") -> dict:
    """Only the entries of `state_dict` that belong to trainable parameters: frozen towers and a
    frozen LLM are rebuilt from their sources on resume, not copied into every checkpoint."""
    names = {prefix + n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in state_dict.items() if k in names}


def rng_states() -> dict:
    """Every random source's state, in types that `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(), "python": [version, list(state), gauss_next],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    version, state, gauss_next = states["python"]
    random.setstate((version, tuple(state), gauss_next))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def resolve_resume(resume, run_dir: Path) -> str | None:
    """`None`, `auto` (the run directory's last checkpoint, if any) or a path."""
    if resume in (None, "", "null"):
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    if not Path(resume).exists():
        raise FileNotFoundError(f"resume: no checkpoint at {resume!r}")
    return str(resume)
