"""Resume: which checkpoint `resume=` means, the random states a checkpoint carries, and which weights it keeps."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from .files import CheckpointError, load_checkpoint_file

log = logging.getLogger(__name__)


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


def _loadable(path: Path) -> str | None:
    """None when `path` reads as a checkpoint, else why not (a DeepSpeed folder only needs its tag files)."""
    if path.is_dir():
        latest = path / "latest"
        ok = latest.is_file() and (path / latest.read_text().strip()).is_dir()
        return None if ok else "a DeepSpeed checkpoint folder without its 'latest' tag"
    try:
        load_checkpoint_file(path)
    except CheckpointError as e:
        return str(e)
    return None


def resolve_resume(resume, run_dir: Path) -> str | None:
    """`None`, `auto` (the run directory's newest loadable checkpoint, if any) or a path."""
    if resume in (None, "", "null"):
        return None
    if resume != "auto":
        if not Path(resume).exists():
            raise CheckpointError(f"resume: no checkpoint at {resume!r}")
        problem = _loadable(Path(resume)) if Path(resume).is_dir() else None  # files: read once, by load_checkpoint
        if problem is not None:
            raise CheckpointError(f"resume: {resume}: {problem}")
        return str(resume)
    folder = run_dir / "checkpoints"
    last = folder / "last.ckpt"
    candidates = [last] if last.exists() else []
    candidates += sorted((p for p in folder.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        problem = _loadable(path)
        if problem is None:
            return str(path)
        log.warning("resume=auto: skipping %s (%s)", path, problem)
    if candidates:
        raise CheckpointError(f"resume=auto: no loadable checkpoint in {folder} (tried {', '.join(map(str, candidates))})")
    return None
