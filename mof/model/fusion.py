"""Fusion of several encoders' patch features into the LLM's visual tokens.

Each fusion owns its projectors (`self.projectors`, one per encoder or one shared) and maps a
list of `[images, tokens, width_i]` features, one per encoder, to `[images, visual_tokens, llm_width]`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .projectors import build_projector


class Fusion(nn.Module):
    def __init__(self, projectors: list[nn.Module]):
        super().__init__()
        self.projectors = nn.ModuleList(projectors)


class FirstEncoderOnly(Fusion):
    """`none`: the LLaVA baseline."""

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.projectors[0](features[0])


class AdditiveFusion(Fusion):
    """A-MoF: `sum_i w_i * f_i` before one shared projector, or after per-encoder projectors."""

    def __init__(self, projectors: list[nn.Module], weights: list[float], after_projector: bool):
        super().__init__(projectors)
        self.weights = list(weights)
        self.after_projector = after_projector

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.after_projector:
            features = [proj(f) for proj, f in zip(self.projectors, features)]
        stacked = torch.stack(features)  # [k, images, tokens, width]
        weights = stacked.new_tensor(self.weights).view(-1, 1, 1, 1)
        mixed = (weights * stacked).sum(0)
        return mixed if self.after_projector else self.projectors[0](mixed)


class InterleavedFusion(Fusion):
    """I-MoF: per-encoder projectors, then tokens alternate patch by patch: c1, d1, c2, d2, ..."""

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        projected = torch.stack([proj(f) for proj, f in zip(self.projectors, features)], dim=2)  # [n, T, k, D]
        n, tokens, k, width = projected.shape
        return projected.reshape(n, tokens * k, width)


class ConcatFusion(Fusion):
    """Channel concatenation, one projector (prismatic-vlms' DINO + SigLIP fusion)."""

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.projectors[0](torch.cat(features, dim=-1))


def resample_to_grid(features: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize `[n, rows*cols, width]` patch features to another grid."""
    if grid == target:
        return features
    n, _, width = features.shape
    maps = features.transpose(1, 2).reshape(n, width, *grid)
    maps = F.interpolate(maps, size=target, mode="bilinear", align_corners=False)
    return maps.flatten(2).transpose(1, 2)


def build_fusion(config, encoder_widths: list[int], llm_width: int) -> Fusion:
    kind = config.projector_type
    if config.fusion == "none":
        return FirstEncoderOnly([build_projector(kind, encoder_widths[0], llm_width)])
    if config.fusion == "additive":
        if config.mix_after_projector:
            projectors = [build_projector(kind, w, llm_width) for w in encoder_widths]
        else:
            projectors = [build_projector(kind, encoder_widths[0], llm_width)]
        return AdditiveFusion(projectors, config.mix_weights_resolved, config.mix_after_projector)
    if config.fusion == "interleaved":
        return InterleavedFusion([build_projector(kind, w, llm_width) for w in encoder_widths])
    if config.fusion == "concat":
        return ConcatFusion([build_projector(kind, sum(encoder_widths), llm_width)])
    raise ValueError(f"unknown fusion {config.fusion!r}; known: none, additive, interleaved, concat")
