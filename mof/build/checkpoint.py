"""A model rebuilt from a training checkpoint, which may come from elsewhere: no code runs from it.

The file is read by `checkpoint_io` (restricted unpickling), and the model is rebuilt from the plain values a
run stores (`MofConfig` dict, stage plan, tokenizer reference), never by instantiating a stored config.
"""

from __future__ import annotations

from pathlib import Path

from ..model import MofConfig
from .checkpoint_io import CheckpointError, load_training_checkpoint
from .model import build_model
from .stages import StagePlan


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
    model = build_model(config, plan, seed=int(info.get("seed", 0)), load_pretrained=bool(info.get("load_pretrained")),
                        dtype=info.get("dtype"))
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: checkpoint weights that fit no parameter: {result.unexpected_keys[:4]}")
    missing = sorted({n for n, p in model.named_parameters() if p.requires_grad} - set(state))
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks trained weights {missing[:4]}")
    return model, info, path, ckpt
