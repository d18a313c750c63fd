"""A model ready for its stage: build from a `MofConfig`, load pretrained weights, hand over adapters, freeze."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import MofError
from ..model import MofConfig, MofForConditionalGeneration
from ..model.legacy_keys import PEFT_PREFIXES, migrate_legacy_keys
from .checkpoint_io import load_training_checkpoint
from .stages import StagePlan, apply_stage

log = logging.getLogger(__name__)


class ConfigError(MofError, ValueError):
    """A wrong value in a run's configuration; the message names its key."""


def build_model(model_config: MofConfig, plan: StagePlan | None, seed: int = 0, load_pretrained: bool = False,
                dtype: str | None = None, projector_from: str | None = None, gradient_checkpointing: bool = False):
    """Random weights from the config (seeded, so frozen random parts are the same on every rebuild), then
    pretrained weights where the config names them, then a previous run's adapters, then the stage's freezing."""
    torch.manual_seed(seed)
    model = MofForConditionalGeneration(model_config)
    if load_pretrained:
        model.load_pretrained_components(dtype=getattr(torch, dtype) if dtype else None)
    if projector_from:
        load_adapters(model, projector_from)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return apply_stage(model, plan) if plan is not None else model


def _adapter_state_from(path: Path) -> dict:
    if path.is_dir():
        for candidate in (path / "model.safetensors", path / "export" / "model.safetensors"):
            if candidate.exists():
                return migrate_legacy_keys(load_file(str(candidate)), PEFT_PREFIXES)
        last = path / "checkpoints" / "last.ckpt"
        if not last.exists():
            raise FileNotFoundError(f"model.projector_from: no model.safetensors, export/ or checkpoints/last.ckpt in {path}")
        path = last
    if path.suffix != ".ckpt":
        raise FileNotFoundError(f"model.projector_from: {path} is not a run directory, an export or a .ckpt")
    state = load_training_checkpoint(path)["state_dict"]
    state = {k.removeprefix("model."): v for k, v in state.items()}  # the LightningModule's prefix
    return migrate_legacy_keys(state, PEFT_PREFIXES)


def load_adapters(model: MofForConditionalGeneration, source: str) -> int:
    """Copy the fusion's weights (adapters and any aggregator) from a previous run (stage 1 -> stage 2)."""
    state = _adapter_state_from(Path(source))
    own = model.fusion.state_dict()
    found = {}
    for key, value in state.items():
        for prefix in ("model.fusion.", "base_model.model.model.fusion.modules_to_save.default.", "base_model.model.model.fusion."):
            if key.startswith(prefix):
                found[key[len(prefix):]] = value
    missing = sorted(set(own) - set(found))
    if missing:
        raise ValueError(f"model.projector_from: {source} has no adapter weights for {missing[:4]} "
                         "(was it trained with the same mof fusion and model?)")
    for k in own:
        if found[k].shape != own[k].shape:
            raise ValueError(f"model.projector_from: adapter {k} has shape {tuple(found[k].shape)} in {source}, "
                             f"expected {tuple(own[k].shape)}")
    model.fusion.load_state_dict({k: found[k] for k in own})
    log.info("loaded %d adapter tensors from %s", len(own), source)
    return len(own)
