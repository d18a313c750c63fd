"""`sva_connector`: a spatial aggregation connector after Cambrian-1's Spatial Vision Aggregator, and not Cambrian's
SVA (that is `sva`, in `sva.py`). It was mof's `sva` until Cambrian's whole method replaced it; configs saved with
the old `sva` (they hold `layers`) load as this.

Learnable queries on an S x S grid; query (i, j) cross-attends only to window (i, j) of every encoder's
patch map (an encoder with a G x G grid contributes a (G/S) x (G/S) window), so encoders of different
grids mix without resampling. `layers` rounds of attention + MLP, then one projector to the LLM's width.

What differs from Cambrian's SVA: a round here is `q + attn + MLP(LN(q + attn))` (Cambrian's: `q + MLP(LN(q' +
attn))` with `q'` the queries joined to a projected global context), each query position has its own learned
vector, and there is no global context, per-window positional embedding, query group, newline token, or
aggregation inside the LLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..projectors import build_projector
from .base import Fusion, FusionOptions
from .grids import windows as windows_of


@dataclass
class SvaConnectorOptions(FusionOptions):
    grid: int = 24                  # S: S x S queries, S² visual tokens (24 -> 576)
    layers: int = 1                 # D: rounds of window cross-attention
    hidden_size: int | None = None  # the queries' width; default: the widest encoder's
    num_heads: int = 8


class SvaConnectorLayer(nn.Module):
    """One round: pre-norm cross-attention from each query to its windows, then an MLP; both residual."""

    def __init__(self, widths: list[int], hidden: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(hidden)
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.ModuleList(nn.Linear(w, hidden) for w in widths)
        self.v = nn.ModuleList(nn.Linear(w, hidden) for w in widths)
        self.out = nn.Linear(hidden, hidden)
        self.norm_mlp = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, H] -> [B, heads, L, H / heads]
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, queries: torch.Tensor, windows: list[torch.Tensor]) -> torch.Tensor:
        """queries `[B, 1, H]` (B = images x S²); windows: per encoder `[B, r_i², width_i]`."""
        keys = torch.cat([k(w) for k, w in zip(self.k, windows)], dim=1)
        values = torch.cat([v(w) for v, w in zip(self.v, windows)], dim=1)
        q = self.q(self.norm_q(queries))
        attended = F.scaled_dot_product_attention(self._heads(q), self._heads(keys), self._heads(values))
        queries = queries + self.out(attended.transpose(1, 2).flatten(2))
        return queries + self.mlp(self.norm_mlp(queries))


class SvaConnector(Fusion):
    Options = SvaConnectorOptions
    min_encoders = 1
    keeps_first_projector = False

    def __init__(self, specs, llm_width, options, projector_type):
        super().__init__(specs, llm_width, options, projector_type)
        hidden = _hidden(specs, options)
        s = options.grid
        self.grids = [spec.grid for spec in specs]
        self.queries = nn.Parameter(torch.randn(s * s, hidden) * 0.02)
        self.positions = nn.ParameterList(nn.Parameter(torch.randn(r * c, spec.hidden_size) * 0.02)
                                          for spec, (r, c) in zip(specs, self.grids))
        self.norms = nn.ModuleList(nn.LayerNorm(spec.hidden_size) for spec in specs)
        self.layers = nn.ModuleList(SvaConnectorLayer([spec.hidden_size for spec in specs], hidden, options.num_heads)
                                    for _ in range(options.layers))
        self.norm_out = nn.LayerNorm(hidden)

    def build_projectors(self, specs, llm_width, projector_type):
        return [build_projector(projector_type, _hidden(specs, self.options), llm_width)]

    @classmethod
    def check(cls, specs, options) -> None:
        super().check(specs, options)
        s = options.grid
        if s < 1 or options.layers < 1:
            raise ConfigError(f"MofConfig.fusion: sva_connector needs grid >= 1 and layers >= 1, got grid={s}, layers={options.layers}")
        for spec in specs:
            rows, cols = spec.grid
            if rows % s or cols % s:
                raise ConfigError(f"MofConfig.fusion.grid: {s} does not divide encoder {spec.type}'s {rows}x{cols} patch grid; "
                                 f"choose a grid that divides every encoder's grid")
        hidden = _hidden(specs, options)
        if hidden % options.num_heads:
            raise ConfigError(f"MofConfig.fusion.num_heads: {options.num_heads} does not divide hidden_size {hidden}")

    @classmethod
    def num_tokens(cls, specs, options) -> int:
        return options.grid * options.grid

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        n = features[0].shape[0]
        windows = [windows_of(norm(f + pos), grid, self.options.grid)
                   for f, pos, norm, grid in zip(features, self.positions, self.norms, self.grids)]
        queries = self.queries.to(windows[0].dtype).repeat(n, 1).unsqueeze(1)  # [n * S², 1, H]
        for layer in self.layers:
            queries = layer(queries, windows)
        return self.projectors[0](self.norm_out(queries).reshape(n, -1, queries.shape[-1]))


def _hidden(specs, options: SvaConnectorOptions) -> int:
    return options.hidden_size or max(s.hidden_size for s in specs)
