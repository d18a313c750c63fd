"""From a composed config to a model ready for its stage: build, load weights, hand over adapters, freeze."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate

from ..model import MofConfig, MofForConditionalGeneration
from .stages import StagePlan, apply_stage

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    pass


def model_config_from(cfg) -> MofConfig:
    """The MofConfig of `cfg.model.config`, with errors that name the key; loads no weights."""
    try:
        return instantiate(cfg.model.config)
    except Exception as e:  # Hydra wraps the constructor's error
        cause = e.__cause__ or e
        raise ConfigError(f"model.config / mof: {cause}") from e


def stage_plan(cfg) -> StagePlan:
    st = cfg.stage
    train_vision = bool(st.train_vision) if st.train_vision is not None else bool(cfg.model.get("train_vision", False))
    lora = dict(st.lora) if st.get("lora") else None
    return StagePlan(st.name, bool(st.train_llm), train_vision, lora)


def build_model(cfg, model_config: MofConfig | None = None, apply_stage_plan: bool = True):
    """Random weights from the config (seeded, so frozen random parts are the same on every rebuild),
    then pretrained weights where the config names them, then stage-1 adapters if asked."""
    model_config = model_config or model_config_from(cfg)
    torch.manual_seed(cfg.seed)
    model = MofForConditionalGeneration(model_config)
    if cfg.model.get("load_pretrained"):
        dtype = getattr(torch, cfg.model.dtype) if cfg.model.get("dtype") else None
        model.load_pretrained_components(dtype=dtype)
    if cfg.model.get("projector_from"):
        load_adapters(model, cfg.model.projector_from)
    if cfg.model.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return apply_stage(model, stage_plan(cfg)) if apply_stage_plan else model


def _adapter_state_from(path: Path) -> dict:
    if path.is_dir():
        for candidate in (path / "model.safetensors", path / "export" / "model.safetensors"):
            if candidate.exists():
                from safetensors.torch import load_file

                return load_file(str(candidate))
        last = path / "checkpoints" / "last.ckpt"
        if last.exists():
            path = last
        else:
            raise FileNotFoundError(f"model.projector_from: no model.safetensors, export/ or checkpoints/last.ckpt in {path}")
    if path.suffix == ".ckpt":
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        return {k.removeprefix("model."): v for k, v in state.items()}
    raise FileNotFoundError(f"model.projector_from: {path} is not a run directory, an export or a .ckpt")


def load_adapters(model: MofForConditionalGeneration, source: str) -> int:
    """Copy the fusion's projector weights from a previous run (stage 1 -> stage 2)."""
    state = _adapter_state_from(Path(source))
    own = model.fusion.state_dict()
    found = {}
    for key, value in state.items():
        for prefix in ("fusion.", "base_model.model.fusion.modules_to_save.default.", "base_model.model.fusion."):
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
