"""A model from a `MofConfig`: random weights (seeded), then the pretrained weights the config names.

Callers put it in its stage afterwards (`stages.apply_stage`); a run that starts from a previous run's projectors
copies them in first (`mof.checkpoints.rebuild.load_projectors`), since freezing and LoRA wrapping rename nothing
they read.
"""

from __future__ import annotations

import torch

from .configuration_mof import MofConfig
from .modeling_mof import MofForConditionalGeneration
from .speed import apply_speed


def build_model(model_config: MofConfig, seed: int = 0, load_pretrained: bool = False, dtype: str | None = None,
                gradient_checkpointing: bool | float = False, speed: dict | None = None) -> MofForConditionalGeneration:
    """Seeded, so that frozen random parts are the same on every rebuild (resume, evaluation, export). `speed`: the
    options of `speed.apply_speed` (attention kernel, Liger, regional compile), checked beforehand by the caller."""
    torch.manual_seed(seed)
    model = MofForConditionalGeneration(model_config)
    if load_pretrained:
        model.load_pretrained_components(dtype=getattr(torch, dtype) if dtype else None)
    apply_speed(model, gradient_checkpointing=gradient_checkpointing, **(speed or {}))
    return model
