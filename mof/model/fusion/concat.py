"""Channel concatenation of the encoders' patch features, one projector (prismatic-vlms' DINOv2 + SigLIP fusion)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..projectors import build_projector
from .base import Fusion, FusionOptions
from .grids import aligned, check_same_grid


@dataclass
class ConcatOptions(FusionOptions):
    resample: bool = False


class ConcatFusion(Fusion):
    Options = ConcatOptions
    keeps_first_projector = False

    def build_projectors(self, specs, llm_width, projector_type):
        return [build_projector(projector_type, sum(s.hidden_size for s in specs), llm_width)]

    @classmethod
    def check(cls, specs, options) -> None:
        super().check(specs, options)
        check_same_grid(specs, options.resample)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.projectors[0](torch.cat(aligned(features, self.specs, self.options.resample), dim=-1))
