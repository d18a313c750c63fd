"""The interface every fusion meets: options, checks and token counts from the encoder specs alone, and
a module mapping a list of per-encoder features `[images, tokens_i, width_i]` to `[images, visual_tokens, llm_width]`."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from ...errors import ConfigError
from ..projectors import build_projector


@dataclass
class FusionOptions:
    """A fusion's own settings (subclass per fusion); `MofConfig.fusion` stores them with a `type` key."""


class Fusion(nn.Module):
    """Subclasses set `Options`, and override `check`/`num_tokens` where the defaults do not hold."""

    Options: type[FusionOptions] = FusionOptions
    min_encoders = 2
    keeps_first_projector = True  # projectors[0] maps the first encoder's features alone (LLaVA's projector fits it)

    def __init__(self, specs: list, llm_width: int, options: FusionOptions, projector_type: str):
        super().__init__()
        self.options = options
        self.specs = specs
        self.projectors = nn.ModuleList(self.build_projectors(specs, llm_width, projector_type))

    def build_projectors(self, specs, llm_width: int, projector_type: str) -> list[nn.Module]:
        """One projector per encoder unless a fusion says otherwise."""
        return [build_projector(projector_type, s.hidden_size, llm_width) for s in specs]

    @classmethod
    def check(cls, specs: list, options: FusionOptions) -> None:
        """Raise `ValueError` naming the config key when the encoders cannot be fused this way."""
        if len(specs) < cls.min_encoders:
            raise ConfigError(f"MofConfig.fusion: {cls.__name__} mixes encoders: expected at least "
                             f"{cls.min_encoders} vision_encoders, got {len(specs)}")
        if len(specs) > 1 and any(s.keep != "patch" for s in specs):
            raise ConfigError("MofConfig.vision_encoders[].keep='all' keeps CLS/register tokens and only works with "
                             "a single encoder (fusion type 'none')")

    @classmethod
    def num_tokens(cls, specs: list, options: FusionOptions) -> int:
        """Visual tokens per image, from the specs alone (no module built)."""
        return specs[0].num_tokens

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def attach(self, language_model: nn.Module) -> None:
        """For a fusion that also works inside the LLM (Cambrian's SVA): hook its decoder layers. Most do not."""

    def place(self, image_mask: torch.Tensor | None) -> None:
        """Told, each forward, where the visual tokens sit in the LLM's input (`[B, L]`), or None without images."""


def options_from_dict(cls: type[Fusion], name: str, values: dict) -> FusionOptions:
    known = {f.name for f in fields(cls.Options)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"MofConfig.fusion: fusion {name!r} has no option(s) {sorted(unknown)}; "
                         f"its options are {sorted(known) or 'none'}")
    return cls.Options(**values)
