"""Start-up validation of a composed training config: a wrong value is a one-line error naming its key."""

from __future__ import annotations

from pathlib import Path

from ..evaluation.benchmarks import BENCHMARKS

from ..errors import ConfigError
from ..model.stages import STAGES
from ..data.conversation import TEMPLATES
from ..model import FUSIONS
from ..model.weights import require_available
from .strategies import STRATEGIES


def _check(ok: bool, key: str, expected: str, value) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def validate(cfg) -> None:
    _check(cfg.stage.name in STAGES, "stage.name", f"one of {STAGES}", cfg.stage.name)
    _check(cfg.stage.template in TEMPLATES, "stage.template", f"one of {tuple(TEMPLATES)}", cfg.stage.template)
    _check(cfg.mof.type in FUSIONS, "mof.type", f"one of {tuple(FUSIONS)}", cfg.mof.type)
    if "alpha" in cfg.mof:
        _check(0.0 <= float(cfg.mof.alpha) <= 1.0, "mof.alpha", "a number in [0, 1]", cfg.mof.alpha)
    _check(cfg.strategy.name in STRATEGIES, "strategy.name", f"one of {STRATEGIES}", cfg.strategy.name)
    opt = cfg.stage.optimizer
    for key in ("lr", "adapter_lr", "vision_lr", "llm_lr"):
        v = opt.get(key)
        _check(v is None or float(v) > 0, f"stage.optimizer.{key}", "a positive number", v)
    _check(0.0 <= float(cfg.stage.scheduler.warmup_ratio) < 1.0, "stage.scheduler.warmup_ratio", "a number in [0, 1)",
           cfg.stage.scheduler.warmup_ratio)
    if cfg.stage.name == "lora":
        lora = cfg.stage.lora
        _check(lora is not None and int(lora.r) > 0, "stage.lora.r", "a positive integer", lora and lora.r)
    _check(int(cfg.data.batch_size) > 0, "data.batch_size", "a positive integer", cfg.data.batch_size)
    _check(int(cfg.data.max_length) > 0, "data.max_length", "a positive integer", cfg.data.max_length)
    _check(int(cfg.data.num_workers) >= 0, "data.num_workers", "0 or more", cfg.data.num_workers)
    _check(cfg.data.image_mode in ("pad", "crop", "resize"), "data.image_mode", "pad, crop or resize", cfg.data.image_mode)
    if not cfg.data.get("synthetic"):
        for i, src in enumerate(cfg.data.sources or []):
            _check(Path(src.path).is_file(), f"data.sources[{i}].path", "an existing JSON/JSONL file", src.path)
    _check(int(cfg.trainer.max_epochs) > 0 or int(cfg.trainer.max_steps) > 0, "trainer.max_epochs",
           "a positive number (or trainer.max_steps > 0)", cfg.trainer.max_epochs)
    _check(int(cfg.trainer.accumulate_grad_batches) >= 1, "trainer.accumulate_grad_batches", "1 or more",
           cfg.trainer.accumulate_grad_batches)
    for key in ("every_n_train_steps", "keep_every_n_train_steps"):
        v = cfg.checkpoint.get(key)
        _check((v is None and key.startswith("keep")) or (isinstance(v, int) and v > 0), f"checkpoint.{key}",
               "a positive integer" + (" or null" if key.startswith("keep") else ""), v)
    _check(cfg.resume in (None, "auto") or Path(str(cfg.resume)).exists(), "resume", "null, auto or an existing checkpoint",
           cfg.resume)
    _check(isinstance(cfg.get("overwrite", False), bool), "overwrite", "true or false", cfg.get("overwrite"))
    after = cfg.evaluate_after
    names = [] if after is None else [after] if isinstance(after, str) else list(after)
    mllm_benchmarks = [n for n, b in BENCHMARKS.items() if not hasattr(b, "evaluate_model")]  # not CLIP-like ones
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
