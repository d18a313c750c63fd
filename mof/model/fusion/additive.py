"""A-MoF: `sum_i w_i * f_i` of the encoders' patch features before one shared projector (the paper), or after
per-encoder projectors (`after_projector`, for encoders of unequal widths)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import ConfigError
from ..projectors import build_projector
from .base import Fusion, FusionOptions
from .grids import aligned, check_same_grid


@dataclass
class AdditiveOptions(FusionOptions):
    alpha: float = 0.5            # the first encoder's share when there are two (the other gets 1 - alpha)
    mix_weights: list | None = None   # one weight per encoder, summing to 1; overrides alpha
    after_projector: bool = False
    resample: bool = False


class AdditiveFusion(Fusion):
    Options = AdditiveOptions

    def __init__(self, specs, llm_width, options, projector_type):
        super().__init__(specs, llm_width, options, projector_type)
        self.weights = weights(options, len(specs))

    def build_projectors(self, specs, llm_width, projector_type):
        if self.options.after_projector:
            return super().build_projectors(specs, llm_width, projector_type)
        return [build_projector(projector_type, specs[0].hidden_size, llm_width)]

    @classmethod
    def check(cls, specs, options) -> None:
        super().check(specs, options)
        if not 0.0 <= options.alpha <= 1.0:
            raise ConfigError(f"MofConfig.fusion.alpha: expected a value in [0, 1], got {options.alpha}")
        w = weights(options, len(specs))
        if len(w) != len(specs):
            raise ConfigError(f"MofConfig.fusion.mix_weights: expected {len(specs)} weights (one per encoder), got {len(w)}")
        if not math.isclose(sum(w), 1.0, abs_tol=1e-6):
            raise ConfigError(f"MofConfig.fusion.mix_weights: expected weights summing to 1, got {w} (sum {sum(w)})")
        widths = [s.hidden_size for s in specs]
        if len(set(widths)) > 1 and not options.after_projector:
            raise ConfigError(
                f"MofConfig.fusion type 'additive' sums features before one projector, but the encoders' widths differ "
                f"({dict(zip([s.type for s in specs], widths))}); set fusion.after_projector=true to mix after "
                "per-encoder projectors"
            )
        check_same_grid(specs, options.resample)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        features = aligned(features, self.specs, self.options.resample)
        if self.options.after_projector:
            features = [proj(f) for proj, f in zip(self.projectors, features)]
        stacked = torch.stack(features)  # [k, images, tokens, width]
        mixed = (stacked.new_tensor(self.weights).view(-1, 1, 1, 1) * stacked).sum(0)
        return mixed if self.options.after_projector else self.projectors[0](mixed)


def weights(options: AdditiveOptions, k: int) -> list[float]:
    if options.mix_weights is not None:
        return [float(w) for w in options.mix_weights]
    if k == 2:
        return [float(options.alpha), 1.0 - float(options.alpha)]
    return [1.0 / k] * k
