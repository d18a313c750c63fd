"""I-MoF: one projector per encoder, then the token streams alternate patch by patch: c1, d1, c2, d2, ..."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Fusion, FusionOptions
from .grids import aligned, check_same_grid


@dataclass
class InterleavedOptions(FusionOptions):
    resample: bool = False


class InterleavedFusion(Fusion):
    Options = InterleavedOptions

    @classmethod
    def check(cls, specs, options) -> None:
        super().check(specs, options)
        check_same_grid(specs, options.resample)

    @classmethod
    def num_tokens(cls, specs, options) -> int:
        return specs[0].num_tokens * len(specs)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        features = aligned(features, self.specs, self.options.resample)
        projected = torch.stack([proj(f) for proj, f in zip(self.projectors, features)], dim=2)  # [n, T, k, D]
        n, tokens, k, width = projected.shape
        return projected.reshape(n, tokens * k, width)
