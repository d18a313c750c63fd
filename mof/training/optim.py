"""Parameter groups (projector / vision / LLM learning rates, no decay on norms and biases), AdamW, cosine schedule."""

from __future__ import annotations

import math

import torch
from transformers import get_cosine_schedule_with_warmup

from ..errors import ConfigError


def _part(name: str) -> str:
    if ".fusion." in f".{name}":
        return "projector"
    if "vision_encoders." in name:
        return "vision"
    return "llm"


def param_groups(model, lr: float, weight_decay: float, projector_lr=None, vision_lr=None, llm_lr=None) -> list[dict]:
    lrs = {"projector": projector_lr or lr, "vision": vision_lr or lr, "llm": llm_lr or lr}
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = _part(name)
        decay = p.ndim >= 2 and "norm" not in name.lower()
        key = (part, decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": lrs[part], "weight_decay": weight_decay if decay else 0.0,
                           "name": f"{part}{'' if decay else '_no_decay'}"}
        groups[key]["params"].append(p)
    if not groups:
        raise ConfigError("optimizer: the model has no trainable parameter")
    return list(groups.values())


def build_optimizer(model, total_steps: int, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999),
                    projector_lr=None, vision_lr=None, llm_lr=None, warmup_ratio: float = 0.03, cpu_adam: bool = False,
                    fused: bool = False):
    """AdamW over the parameter groups; `cpu_adam`: DeepSpeed's CPU AdamW, which ZeRO-Offload requires; `fused`:
    torch's fused AdamW (`speed.fused_adamw`), the same update in one kernel."""
    groups = param_groups(model, lr, weight_decay, projector_lr, vision_lr, llm_lr)
    if cpu_adam:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay, adamw_mode=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=bool(fused) or None)
    warmup = math.ceil(warmup_ratio * total_steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, max(total_steps, 1))
    return optimizer, scheduler
