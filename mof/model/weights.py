"""Where pretrained weights come from: a local directory or a hub id, checked before anything loads."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MofError


class WeightsNotFoundError(MofError, FileNotFoundError):
    pass


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def require_available(ref: str) -> None:
    """Fail at once, naming `ref`, when its weights cannot be had (no network wait when offline)."""
    path = Path(os.path.expanduser(ref))
    if path.is_dir():
        return
    looks_local = ref.startswith(("/", ".", "~")) or ref.count("/") > 1
    if looks_local:
        raise WeightsNotFoundError(f"pretrained weights: no directory at {ref!r}")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(ref, "config.json"), str):
        return
    if _offline():
        raise WeightsNotFoundError(
            f"pretrained weights {ref!r} are not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
            f"Download them where there is network (`hf download {ref}`), or point the config at a local "
            f"directory holding them (e.g. model.vision_encoders.0.pretrained=/path/to/dir)."
        )
