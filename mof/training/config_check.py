"""Start-up validation of a composed training config: a wrong value is a one-line error naming its key."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import torch
from omegaconf import OmegaConf
from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

from ..evaluation.benchmarks import BENCHMARKS

from ..errors import ConfigError
from ..model.stages import STAGES
from ..data.conversation import TEMPLATES
from ..data.synthetic import checked_question_share
from ..model import FUSIONS
from ..model.speed import check_speed_options
from ..model.weights import require_available
from .strategies import STRATEGIES


def _flat(t) -> tuple:
    return tuple(x for a in typing.get_args(t) for x in (_flat(a) if typing.get_args(a) else (a,)))


PRECISIONS = _flat(_PRECISION_INPUT)  # Lightning's own list


def _check(ok: bool, key: str, expected: str, value) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def _number(value, key: str, expected: str, ok, integer: bool = False):
    """`value` as a number that `ok` accepts (an integer where `integer`), else a `ConfigError` naming `key`."""
    try:
        x = float(value)
        if isinstance(value, bool) or (integer and x != int(x)):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        x = math.nan
    _check(not math.isnan(x) and ok(x), key, expected, value)
    return int(x) if integer else x


def validate(cfg) -> None:
    _check(cfg.stage.name in STAGES, "stage.name", f"one of {STAGES}", cfg.stage.name)
    _check(cfg.stage.template in TEMPLATES, "stage.template", f"one of {tuple(TEMPLATES)}", cfg.stage.template)
    template = cfg.data.get("template")
    _check(template is None or template in TEMPLATES, "data.template", f"null or one of {tuple(TEMPLATES)}", template)
    _check(cfg.mof.type in FUSIONS, "mof.type", f"one of {tuple(FUSIONS)}", cfg.mof.type)
    if "alpha" in cfg.mof:
        _number(cfg.mof.alpha, "mof.alpha", "a number in [0, 1]", lambda x: 0.0 <= x <= 1.0)
    _check(cfg.strategy.name in STRATEGIES, "strategy.name", f"one of {STRATEGIES}", cfg.strategy.name)
    precision = cfg.trainer.get("precision")
    _check(precision is None or precision in PRECISIONS, "trainer.precision", f"null or one of {PRECISIONS}", precision)
    speed = cfg.get("speed") or {}
    accelerator = str(cfg.trainer.get("accelerator"))
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    check_speed_options(speed.get("attention", "sdpa"), speed.get("liger_kernels", False), speed.get("compile_layers"),
                        cfg.model.get("gradient_checkpointing"), training=True, device="cuda" if gpu else "cpu")
    _check(isinstance(speed.get("fused_adamw", False), bool), "speed.fused_adamw", "true or false",
           speed.get("fused_adamw"))
    opt = cfg.stage.optimizer
    for key in ("lr", "projector_lr", "vision_lr", "llm_lr"):
        if opt.get(key) is not None:
            _number(opt.get(key), f"stage.optimizer.{key}", "a positive number", lambda x: x > 0)
    _number(cfg.stage.scheduler.warmup_ratio, "stage.scheduler.warmup_ratio", "a number in [0, 1)", lambda x: 0 <= x < 1)
    if cfg.stage.name == "lora":
        lora = cfg.stage.lora
        _check(lora is not None, "stage.lora", "the LoRA settings (r, alpha, dropout)", lora)
        _number(lora.r, "stage.lora.r", "a positive integer", lambda x: x > 0, integer=True)
    if cfg.model.get("threads") is not None:
        _number(cfg.model.threads, "model.threads", "a positive integer or null", lambda x: x > 0, integer=True)
    _number(cfg.data.batch_size, "data.batch_size", "a positive integer", lambda x: x > 0, integer=True)
    _number(cfg.data.max_length, "data.max_length", "a positive integer", lambda x: x > 0, integer=True)
    _number(cfg.data.num_workers, "data.num_workers", "0 or more", lambda x: x >= 0, integer=True)
    _check(cfg.data.image_mode in ("pad", "crop", "resize"), "data.image_mode", "pad, crop or resize", cfg.data.image_mode)
    if cfg.data.get("synthetic"):
        checked_question_share(cfg.data.synthetic.get("question_share"))
    else:
        sources = cfg.data.get("sources")
        _check(OmegaConf.is_list(sources) and len(sources) > 0, "data.sources",
               "at least one dataset [{path, image_root, weight}]", sources)
        for i, src in enumerate(sources):
            path = src.get("path") if OmegaConf.is_dict(src) else None
            _check(isinstance(path, str) and Path(path).is_file(), f"data.sources[{i}].path", "an existing JSON/JSONL file",
                   path)
            if src.get("weight") is not None:
                _number(src.weight, f"data.sources[{i}].weight", "a positive number", lambda x: x > 0)
    devices = cfg.trainer.get("devices")
    _check(devices is None or devices == "auto" or (OmegaConf.is_list(devices) and len(devices) > 0)
           or (isinstance(devices, int) and not isinstance(devices, bool) and (devices >= 1 or devices == -1))
           or (isinstance(devices, str) and devices.strip() not in ("", "0")),
           "trainer.devices", "auto, -1, a positive number of devices, or a non-empty list of device ids", devices)
    epochs = _number(cfg.trainer.max_epochs, "trainer.max_epochs", "an integer", lambda x: True, integer=True)
    steps = _number(cfg.trainer.max_steps, "trainer.max_steps", "an integer (-1: no limit)", lambda x: True, integer=True)
    _check(epochs > 0 or steps > 0, "trainer.max_epochs", "a positive number (or trainer.max_steps > 0)", epochs)
    _number(cfg.trainer.accumulate_grad_batches, "trainer.accumulate_grad_batches", "1 or more", lambda x: x >= 1,
            integer=True)
    for key in ("every_n_train_steps", "keep_every_n_train_steps"):
        v = cfg.checkpoint.get(key)
        _check((v is None and key.startswith("keep")) or (isinstance(v, int) and v > 0), f"checkpoint.{key}",
               "a positive integer" + (" or null" if key.startswith("keep") else ""), v)
    _check(cfg.resume in (None, "auto") or Path(str(cfg.resume)).exists(), "resume", "null, auto or an existing checkpoint",
           cfg.resume)
    _check(isinstance(cfg.get("overwrite", False), bool), "overwrite", "true or false", cfg.get("overwrite"))
    after = cfg.evaluate_after
    names = [] if after is None else [after] if isinstance(after, str) else list(after)
    mllm_benchmarks = [n for n, b in BENCHMARKS.items() if b.kind == "mllm"]  # not CLIP-like ones
    _check(all(n in mllm_benchmarks for n in names), "evaluate_after",
           f"null or a list of benchmarks that score an MLLM ({', '.join(mllm_benchmarks)})", after)
    if cfg.model.get("projector_from"):
        _check(Path(cfg.model.projector_from).exists(), "model.projector_from", "an existing run directory, export or .ckpt",
               cfg.model.projector_from)
    if cfg.model.get("load_pretrained"):
        refs = [e.get("pretrained") for e in cfg.model.config.get("vision_encoders", []) or []]
        tokenizer = cfg.model.tokenizer if cfg.model.tokenizer != "tiny" else None  # "tiny" ships with mof
        for ref in filter(None, refs + [cfg.model.config.get("llm"), tokenizer]):
            require_available(ref)
