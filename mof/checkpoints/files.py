"""Checkpoint files: read without running code from them (they may come from elsewhere), written atomically.

Files are read with `torch.load(weights_only=True)`. A DeepSpeed ZeRO checkpoint folder (any stage, any number
of ranks) is consolidated into one fp32 state dict by DeepSpeed's own merge logic, with every `torch.load` it
makes routed through the same restricted reader and an explicit allowlist of DeepSpeed's plain data types.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path
from unittest import mock

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import MofError
from .layout import DEEPSPEED, LIGHTNING_PREFIXES, migrate_legacy_keys, strip_prefix

_torch_load = torch.load  # the real one, also while DeepSpeed's loads are routed through this module


class CheckpointError(MofError, ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def load_checkpoint_file(path: str | Path, allowed_globals: list | None = None) -> dict:
    """A `torch.save`d file read by PyTorch's restricted unpickler; anything that would run code is refused."""
    path = Path(path)
    try:
        if allowed_globals:
            with torch.serialization.safe_globals(allowed_globals):
                return _torch_load(path, map_location="cpu", weights_only=True)
        return _torch_load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines()]
        refused = next((line for line in lines if "GLOBAL" in line), None)
        if refused:
            raise CheckpointError(f"{path}: refused to load: it holds Python objects that could run code ({refused})") from None
        detail = next((line for line in lines if line.startswith(("Unsupported", "Unpickler error", "invalid"))), "")
        raise CheckpointError(f"{path}: not a readable checkpoint (not a PyTorch file: {detail or 'unpickling failed'})") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or not a PyTorch file: {str(e).splitlines()[0]})") from None
    except Exception as e:  # noqa: BLE001 - arbitrary bytes fail in arbitrary ways (UnicodeDecodeError, struct.error...)
        raise CheckpointError(f"{path}: not a readable checkpoint (not a PyTorch file: {type(e).__name__})") from None


def load_training_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents; a DeepSpeed ZeRO folder is consolidated into one fp32 state dict first. Weight
    names of older versions are migrated to the current layout."""
    path = Path(path)
    ckpt = consolidate_zero_checkpoint(path) if path.is_dir() and (path / "checkpoint").is_dir() else load_checkpoint_file(path)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        ckpt["state_dict"] = migrate_legacy_keys(ckpt["state_dict"], LIGHTNING_PREFIXES)
    return ckpt


_DEEPSPEED_STATES = ("module", "optimizer", "lr_scheduler", "csr_tensor_module_names", "skipped_steps", "global_steps",
                     "dp_world_size", "mp_world_size")


def _deepspeed_data_types() -> list:
    """Enums and plain records DeepSpeed pickles into its checkpoints (no `__reduce__` that runs code)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, fragment_address]


@contextlib.contextmanager
def restricted_loads():
    """Every `torch.load` inside (DeepSpeed's included) goes through the restricted reader."""
    allowed = _deepspeed_data_types()
    with mock.patch("torch.load", lambda f, *args, **kwargs: load_checkpoint_file(f, allowed)):
        yield


def consolidate_zero_checkpoint(checkpoint_dir: str | Path) -> dict:
    """One checkpoint dict: `state_dict` (fp32 trained weights) + Lightning's and mof's states from rank 0."""
    from deepspeed.utils.zero_to_fp32 import (
        get_fp32_state_dict_from_zero_checkpoint,
        get_model_state_file,
        get_optim_files,
    )

    checkpoint_dir = Path(checkpoint_dir)
    with restricted_loads():
        try:
            state_dict = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir))
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise CheckpointError(f"{checkpoint_dir}: not a usable DeepSpeed checkpoint folder ({e})") from None
        latest = checkpoint_dir / "latest"
        tag_dir = checkpoint_dir / (latest.read_text().strip() if latest.exists() else "checkpoint")
        optim = load_checkpoint_file(get_optim_files(str(tag_dir))[0], _deepspeed_data_types())
        model_file = get_model_state_file(str(tag_dir), optim["optimizer_state_dict"]["zero_stage"])
        client = load_checkpoint_file(model_file, _deepspeed_data_types())
    checkpoint = {k: v for k, v in client.items() if k not in _DEEPSPEED_STATES}
    checkpoint["state_dict"] = strip_prefix(state_dict, DEEPSPEED)
    return checkpoint


PREVIOUS_LAST = "last-previous.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `X.ckpt.tmp`, fsyncs, then renames onto `X.ckpt`: a kill during a save leaves the
    previous checkpoint whole. The `last.ckpt` it replaces is kept as `last-previous.ckpt`: a state is known
    good only once the next step computed a finite loss from it (see `set_aside_unverified_last`)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        fs = get_filesystem(str(path))
        fs.makedirs(str(path.parent), exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        if path.name == "last.ckpt" and path.exists():
            os.replace(path, path.with_name(PREVIOUS_LAST))
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        """The restricted reader (one-line `CheckpointError`), whatever Lightning asks for: a resumed file runs no code.
        Older versions' weight names are migrated here, the one place a Lightning checkpoint is read."""
        return load_training_checkpoint(path)


def set_aside_unverified_last(folder: Path, step: int) -> Path | None:
    """`last.ckpt` holds state `step`, whose loss came out non-finite: keep it as `nonfinite-step<N>.ckpt` and put
    the previous (verified) one back as `last.ckpt`, so that `resume=auto` and the error message name a good state.
    A periodic `step<N>.ckpt` of that state is set aside too (`nonfinite-step<N>.ckpt` of its own name), so no file
    under an ordinary name holds it. Returns the good checkpoint, if there is one."""
    last, previous = folder / "last.ckpt", folder / PREVIOUS_LAST
    if last.is_file():
        os.replace(last, folder / f"nonfinite-step{step}.ckpt")
        if previous.is_file():
            os.replace(previous, last)
    periodic = folder / f"step{step:06d}.ckpt"   # `KeptCheckpoints`' name for that state
    if periodic.is_file():
        os.replace(periodic, folder / f"nonfinite-{periodic.name}")
    return last if last.exists() else None
