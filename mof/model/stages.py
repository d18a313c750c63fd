"""What each training stage trains: freezing, LoRA, and a report of parameter counts per part.

A training notion, kept beside the model because evaluation and export rebuild a checkpoint's model in its stage
(LoRA wrapping gives its weights their names), and they may not import training."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)

STAGES = ("pretrain", "finetune", "lora")
LLM_LINEAR_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class StagePlan:
    name: str
    train_llm: bool
    train_vision: bool
    lora: dict | None = None

    @classmethod
    def from_stage_config(cls, stage) -> "StagePlan":
        """From a run's `stage` section (a Hydra node or a plain dict read from a checkpoint)."""
        lora = stage.get("lora")
        return cls(str(stage["name"]), bool(stage["train_llm"]), bool(stage.get("train_vision") or False),
                   dict(lora) if lora else None)


def apply_stage(model, plan: StagePlan) -> nn.Module:
    """Freeze/unfreeze the parts of a `MofForConditionalGeneration`; for `lora`, wrap it in peft.

    The projectors (the fusion's modules) are always trained. LoRA goes on the LLM's linear layers
    only, never the vision towers; the projectors are trained in full and saved with the LoRA weights.
    """
    if plan.name not in STAGES:
        raise ConfigError(f"stage.name: expected one of {STAGES}, got {plan.name!r}")
    model.requires_grad_(False)
    model.fusion.requires_grad_(True)
    for encoder in model.vision_encoders:
        encoder.set_trainable(plan.train_vision)
    for part in (model.language_model, model.lm_head):
        part.requires_grad_(plan.train_llm and plan.name != "lora")
    if plan.name == "lora":
        from peft import LoraConfig, get_peft_model

        lora = dict(plan.lora or {})
        targets = lora.pop("target_modules", None) or list(LLM_LINEAR_TARGETS)
        vision_trainable = {n for n, p in model.vision_encoders.named_parameters() if p.requires_grad}
        config = LoraConfig(
            r=lora.pop("r", 128), lora_alpha=lora.pop("alpha", 256), lora_dropout=lora.pop("dropout", 0.05),
            target_modules=r"model\.language_model\..*\.(" + "|".join(targets) + ")", modules_to_save=["fusion"], **lora)
        with warnings.catch_warnings():   # peft reads transformers 5's deprecated `is_gradient_checkpointing`: not ours to mend
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            model = get_peft_model(model, config)
        if vision_trainable:  # peft freezes everything it does not own
            inner = model.base_model.model
            for n, p in inner.vision_encoders.named_parameters():
                p.requires_grad_(n in vision_trainable)
    return model


def unwrap(model):
    """The `MofForConditionalGeneration` inside a peft wrapper (or the model itself)."""
    return model.base_model.model if hasattr(model, "peft_config") else model


def parameter_report(model) -> list[tuple[str, int, int]]:
    """`(part, parameters, trainable)` for each encoder, the projectors, the LLM and LoRA."""
    inner = unwrap(model)
    parts = {f"vision[{i}] {enc.spec.type}": enc for i, enc in enumerate(inner.vision_encoders)}
    parts["projectors"] = inner.fusion
    parts["llm"] = (inner.language_model, inner.lm_head)
    rows = []
    for name, modules in parts.items():
        params = [(n, p) for module in (modules if isinstance(modules, tuple) else (modules,))
                  for n, p in module.named_parameters()]
        base = [p for n, p in params if "lora_" not in n]
        rows.append((name, sum(p.numel() for p in base), sum(p.numel() for p in base if p.requires_grad)))
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    if lora:
        rows.append(("lora", sum(p.numel() for p in lora), sum(p.numel() for p in lora if p.requires_grad)))
    return rows


def log_parameter_report(model) -> str:
    rows = parameter_report(model)
    lines = [f"{'part':<22}{'parameters':>14}{'trainable':>14}"]
    lines += [f"{n:<22}{total:>14,}{train:>14,}" for n, total, train in rows]
    lines.append(f"{'total':<22}{sum(r[1] for r in rows):>14,}{sum(r[2] for r in rows):>14,}")
    text = "\n".join(lines)
    log.info("parameters:\n%s", text)
    return text
