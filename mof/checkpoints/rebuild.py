"""A model rebuilt from a training checkpoint, which may come from elsewhere: no code runs from it.

The file is read by `files` (restricted unpickling), and the model is rebuilt from the plain values a run stores
(`MofConfig` dict, stage plan, tokenizer reference), never by instantiating a stored config. `load_projectors`
copies a previous run's projectors (stage 1 -> stage 2) from the same kinds of files.
"""

from __future__ import annotations

import logging
from pathlib import Path

from safetensors.torch import load_file

from ..errors import ConfigError
from ..model import MofConfig, MofForConditionalGeneration
from ..model.factory import build_model
from ..model.stages import StagePlan, apply_stage
from .files import CheckpointError, load_training_checkpoint
from .layout import LIGHTNING, PEFT_PREFIXES, fusion_state, migrate_legacy_keys, strip_prefix

log = logging.getLogger(__name__)


def resolve_checkpoint_path(checkpoint: str | Path) -> Path:
    path = Path(checkpoint)
    if path.is_dir() and (path / "checkpoints" / "last.ckpt").exists():
        path = path / "checkpoints" / "last.ckpt"
    if not path.exists():
        raise CheckpointError(f"{checkpoint}: no checkpoint there (expected a .ckpt file, a DeepSpeed checkpoint "
                              "folder or a run directory)")
    return path


def run_info(checkpoint: dict, path: Path) -> dict:
    info = checkpoint.get("mof") if isinstance(checkpoint, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("model_config"), dict) or "stage" not in info:
        raise CheckpointError(f"{path}: holds no mof run information (was it written by mof's train.py?)")
    return info


def rebuild_from_checkpoint(checkpoint: str | Path):
    """`(model, info, path, checkpoint dict)`: the model of a training checkpoint, trained weights loaded."""
    path = resolve_checkpoint_path(checkpoint)
    ckpt = load_training_checkpoint(path)
    info = run_info(ckpt, path)
    try:
        config = MofConfig.from_dict(info["model_config"])
        plan = StagePlan.from_stage_config(info["stage"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its stored model configuration is invalid: {e}") from None
    model = build_model(config, seed=int(info.get("seed", 0)), load_pretrained=bool(info.get("load_pretrained")),
                        dtype=info.get("dtype"))
    model = apply_stage(model, plan)
    state = strip_prefix(ckpt["state_dict"], LIGHTNING)
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: checkpoint weights that fit no parameter: {result.unexpected_keys[:4]}")
    missing = sorted({n for n, p in model.named_parameters() if p.requires_grad} - set(state))
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks trained weights {missing[:4]}")
    return model, info, path, ckpt


def _model_state_from(path: Path) -> dict:
    """A model's weights (peft's names where it was wrapped) from an export, a run directory or a `.ckpt`."""
    if path.is_dir():
        for candidate in (path / "model.safetensors", path / "export" / "model.safetensors"):
            if candidate.exists():
                return migrate_legacy_keys(load_file(str(candidate)), PEFT_PREFIXES)
        last = path / "checkpoints" / "last.ckpt"
        if not last.exists():
            raise ConfigError(f"model.projector_from: no model.safetensors, export/ or checkpoints/last.ckpt in {path}")
        path = last
    if path.suffix != ".ckpt":
        raise ConfigError(f"model.projector_from: {path} is not a run directory, an export or a .ckpt")
    return strip_prefix(load_training_checkpoint(path)["state_dict"], LIGHTNING)


def load_projectors(model: MofForConditionalGeneration, source: str) -> int:
    """Copy the fusion's weights (projectors and any aggregator) from a previous run (stage 1 -> stage 2)."""
    found = fusion_state(_model_state_from(Path(source)))
    own = model.fusion.state_dict()
    missing = sorted(set(own) - set(found))
    if missing:
        raise ConfigError(f"model.projector_from: {source} has no projector weights for {missing[:4]} "
                          "(was it trained with the same mof fusion and model?)")
    for k in own:
        if found[k].shape != own[k].shape:
            raise ConfigError(f"model.projector_from: projector {k} has shape {tuple(found[k].shape)} in {source}, "
                              f"expected {tuple(own[k].shape)}")
    model.fusion.load_state_dict({k: found[k] for k in own})
    log.info("loaded %d projector tensors from %s", len(own), source)
    return len(own)
