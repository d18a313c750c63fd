"""Where pretrained weights come from: a local directory or a hub id, checked before anything loads."""

from __future__ import annotations

import contextlib
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
        refuse_remote_code(path / "config.json", ref)
        return
    looks_local = ref.startswith(("/", ".", "~")) or ref.count("/") > 1
    if looks_local:
        raise WeightsNotFoundError(f"pretrained weights: no directory at {ref!r}")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref, "config.json")
    if isinstance(cached, str):
        refuse_remote_code(Path(cached), ref)
        return
    if _offline():
        raise WeightsNotFoundError(
            f"pretrained weights {ref!r} are not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
            f"Download them where there is network (`hf download {ref}`), or point the config at a local "
            f"directory holding them (e.g. model.vision_encoders.0.pretrained=/path/to/dir)."
        )


class RemoteCodeError(MofError, ValueError):
    pass


def refuse_remote_code(config_json: Path, ref: str) -> None:
    """A model folder whose config names its own Python classes (`auto_map`) would run that code if trusted; mof
    never trusts remote code, so such a folder is a one-line error naming the file, not a traceback later."""
    import json

    try:
        config = json.loads(config_json.read_text(encoding="utf-8")) if config_json.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsNotFoundError(f"{config_json}: not a readable JSON model config ({ref!r})") from None
    if isinstance(config, dict) and config.get("auto_map"):
        raise RemoteCodeError(f"{config_json}: names its own code (auto_map: {sorted(config['auto_map'])}); mof never "
                              "runs code from a model folder (trust_remote_code is never set)")


class PickleWeightsError(MofError, ValueError):
    pass


@contextlib.contextmanager
def refused_pickles(ref):
    """Around a `from_pretrained` of a folder from elsewhere: transformers reads `.bin` weights with
    `weights_only=True`, so a pickle holding Python objects runs nothing, but fails with a page of advice to
    re-run it unsafely. mof says it in one line instead, naming the folder."""
    import pickle

    try:
        yield
    except pickle.UnpicklingError as e:
        detail = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), "")
        raise PickleWeightsError(f"{ref}: refused to load its weights: a pickle file holding Python objects that could "
                                 f"run code ({detail or 'not plain tensors'}); only tensors are read") from None
