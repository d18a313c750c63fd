"""Export any training checkpoint as a `save_pretrained` model folder.

    python -m mof.export CHECKPOINT [--out DIR]

CHECKPOINT is a Lightning `.ckpt` (a file, or a DeepSpeed checkpoint folder) or a run directory
(its `checkpoints/last.ckpt`). The model is rebuilt from the run configuration stored in the
checkpoint, its trained weights loaded, and written with the tokenizer and image-processing config.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf


def load_training_checkpoint(path: Path) -> dict:
    """A checkpoint's contents; a DeepSpeed ZeRO folder is consolidated into one fp32 state dict first."""
    if path.is_dir() and (path / "checkpoint").is_dir():
        from .training.deepspeed_cpu import consolidate_zero_checkpoint

        return consolidate_zero_checkpoint(path)
    return torch.load(path, map_location="cpu", weights_only=False)


def rebuild_from_checkpoint(checkpoint: str | Path):
    """`(model, cfg, path, checkpoint dict)`: the model of a training checkpoint, trained weights loaded."""
    from .training.build import build_model

    path = Path(checkpoint)
    if path.is_dir() and (path / "checkpoints" / "last.ckpt").exists():
        path = path / "checkpoints" / "last.ckpt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    ckpt = load_training_checkpoint(path)
    info = ckpt.get("mof") or {}
    if "cfg" not in info:
        raise ValueError(f"{path} holds no mof run configuration (was it written by mof's train.py?)")
    cfg = OmegaConf.create(info["cfg"])
    model = build_model(cfg)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{path}: checkpoint weights that fit no parameter: {result.unexpected_keys[:4]}")
    missing = sorted({n for n, p in model.named_parameters() if p.requires_grad} - set(state))
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks trained weights {missing[:4]}")
    return model, cfg, path, ckpt


def export_checkpoint(checkpoint: str | Path, out: str | Path | None = None) -> Path:
    from .data.images import MofImageProcessor
    from .data.tokenizer import load_tokenizer
    from .training.export import save_export, unwrap

    model, cfg, path, ckpt = rebuild_from_checkpoint(checkpoint)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    processor = MofImageProcessor.from_model_config(unwrap(model).config, cfg.data.image_mode, cfg.data.share_first)
    out = Path(out) if out else path.parent.parent / "export"
    return save_export(model, tokenizer, processor, out, {"global_step": ckpt.get("global_step"), "stage": cfg.stage.name,
                                                          "template": cfg.stage.template, "from_checkpoint": str(path)})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--out", default=None, help="default: <run dir>/export")
    a = p.parse_args(argv)
    print(f"exported to {export_checkpoint(a.checkpoint, a.out)}")


if __name__ == "__main__":
    main()
