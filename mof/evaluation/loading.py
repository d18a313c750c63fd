"""One way to load any checkpoint for evaluation: a `mof` export folder, a Lightning `.ckpt`, or a
transformers LLaVA (llava-hf layout) as the CLIP-only baseline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoints.files import CheckpointError
from ..checkpoints.rebuild import rebuild_from_checkpoint
from ..data.images import PROCESSOR_FILE, MofImageProcessor
from ..data.tokenizer import load_tokenizer
from ..errors import ConfigError
from ..model import MofForConditionalGeneration
from ..model.weights import refused_pickles


@dataclass
class Loaded:
    model: MofForConditionalGeneration
    tokenizer: object
    image_processor: MofImageProcessor
    template: str  # the conversation template the checkpoint was trained with


def _from_export(path: Path) -> Loaded:
    with refused_pickles(path):
        model = MofForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    tokenizer = load_tokenizer(str(path))
    processor = (MofImageProcessor.from_pretrained(path).check_fits(model.config, path / PROCESSOR_FILE)
                 if (path / PROCESSOR_FILE).exists() else MofImageProcessor.from_model_config(model.config))
    info = json.loads((path / "mof_export.json").read_text()) if (path / "mof_export.json").exists() else {}
    return Loaded(model, tokenizer, processor, info.get("template") or "vicuna_v1")


def _from_llava(path: str) -> Loaded:
    model = MofForConditionalGeneration.from_llava(path)
    tokenizer = load_tokenizer(path)
    return Loaded(model, tokenizer, MofImageProcessor.from_model_config(model.config), "vicuna_v1")


def _from_lightning(path: Path) -> Loaded:
    model, info, _, _ = rebuild_from_checkpoint(path)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tokenizer = load_tokenizer(str(info.get("tokenizer", "tiny")))
    processor = MofImageProcessor.for_model(info.get("image_processor"), model.config, f"{path}: image_processor")
    return Loaded(model, tokenizer, processor, info["stage"].get("template") or "vicuna_v1")


def usable_device(device) -> torch.device:
    """`device` as torch names it, checked before any model is loaded: a misspelt name or a GPU this machine lacks is
    one line, not torch's traceback after loading."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device: expected cpu, cuda or cuda:N (a torch device), got {str(device)!r}") from e
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device: {device} asked for, but this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ConfigError(f"device: expected cpu or cuda, got {str(device)!r}")
    return device


def load_for_evaluation(checkpoint: str | Path, device: str | torch.device = "cpu") -> Loaded:
    device = usable_device(device)
    path = Path(str(checkpoint))
    if path.suffix == ".ckpt" and (path.is_file() or (path / "checkpoint").is_dir()):
        loaded = _from_lightning(path)
    elif (path / "config.json").is_file():
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        if model_type == "mof":
            loaded = _from_export(path)
        elif model_type == "llava":
            loaded = _from_llava(str(path))
        else:
            raise CheckpointError(f"checkpoint {path}: model_type {model_type!r} is neither 'mof' nor 'llava'")
    elif not path.exists() and "/" in str(checkpoint) and not str(checkpoint).startswith((".", "/")):
        loaded = _from_llava(str(checkpoint))  # a hub id: llava-hf/llava-1.5-7b-hf
    else:
        raise CheckpointError(f"checkpoint {checkpoint}: expected a mof export folder, a .ckpt file, a DeepSpeed "
                              "checkpoint folder, a llava-hf LLaVA folder or hub id")
    loaded.model.to(device).eval()
    return loaded
