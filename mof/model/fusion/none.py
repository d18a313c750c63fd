"""`none`: the first encoder only, through one projector (the LLaVA baseline)."""

from __future__ import annotations

import torch

from .base import Fusion


class FirstEncoderOnly(Fusion):
    min_encoders = 1

    def build_projectors(self, specs, llm_width, projector_type):
        return super().build_projectors(specs[:1], llm_width, projector_type)

    @classmethod
    def check(cls, specs, options) -> None:
        pass  # any first encoder works, CLS/register tokens kept or not

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.projectors[0](features[0])
