"""From a composed Hydra config (the user's own, trusted) to objects: the `MofConfig`, the stage plan, the model,
and the plain values a checkpoint stores so that the model can be rebuilt without that config."""

from __future__ import annotations

from dataclasses import asdict

from hydra.utils import instantiate
from omegaconf import OmegaConf

from ..checkpoints.rebuild import load_projectors
from ..errors import ConfigError
from ..model import MofConfig
from ..model.factory import build_model
from ..model.stages import StagePlan, apply_stage


def model_config_from(cfg) -> MofConfig:
    """The MofConfig of `cfg.model.config`, with errors that name the key; loads no weights."""
    try:
        return instantiate(cfg.model.config, _convert_="all")
    except Exception as e:  # Hydra wraps the constructor's error
        cause = e.__cause__ or e
        raise ConfigError(f"model.config / mof: {cause}") from e


def model_speed(cfg) -> dict:
    """`speed.*` as `build_model` takes it (the optimizer's `fused_adamw` goes to the optimizer)."""
    speed = OmegaConf.to_container(cfg.speed, resolve=True) if cfg.get("speed") is not None else {}
    return {k: v for k, v in speed.items() if k != "fused_adamw"}


def stage_plan(cfg) -> StagePlan:
    return StagePlan.from_stage_config(cfg.stage)


def build_model_from_cfg(cfg, model_config: MofConfig | None = None):
    """Built, pretrained weights loaded, a previous run's projectors copied in (`model.projector_from`), staged."""
    m = cfg.model
    model = build_model(model_config or model_config_from(cfg), seed=cfg.seed, load_pretrained=bool(m.get("load_pretrained")),
                        dtype=m.get("dtype"), gradient_checkpointing=m.get("gradient_checkpointing") or False,
                        speed=model_speed(cfg))
    if m.get("projector_from"):
        load_projectors(model, m.projector_from)
    return apply_stage(model, stage_plan(cfg))


def run_info(cfg, model_config: MofConfig, image_processor) -> dict:
    """Stored in every checkpoint: what `mof.checkpoints.rebuild` rebuilds the model from (plain values only),
    and the whole resolved run configuration for people to read."""
    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    resolved = OmegaConf.to_container(job_cfg, resolve=True)
    return {"model_config": model_config.to_dict(), "stage": resolved["stage"], "seed": cfg.seed,
            "tokenizer": str(cfg.model.tokenizer), "load_pretrained": bool(cfg.model.get("load_pretrained")),
            "dtype": cfg.model.get("dtype"), "image_processor": asdict(image_processor), "cfg": resolved}
