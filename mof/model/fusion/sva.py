"""`sva`: Cambrian-1's Spatial Vision Aggregator (Tong et al., 2024), as its released code builds it
(cambrian-mllm/cambrian: `cambrian/model/vision_sampler.py`, `cambrian_arch.py`, `language_model/cambrian_llama.py`).

Before the LLM (the connector):
- each encoder's patch features through its own projection to width D (`Linear, GELU, Linear, LayerNorm`);
- a global context: the mean of the first encoder's projected features;
- G query groups; group g is one learned vector repeated on an s_g x s_g grid, and its sampler (`depth` layers)
  lets query (i, j) attend only to cell (i, j) of every encoder's map, each encoder's cell with its own learned
  positional embedding; a layer is `q + MLP(LN(x + attn(x)))` with `x = W [q ; W_c context]`;
- each group's output resized bilinearly to grid x grid and the groups joined along the channels, then the
  projector to the LLM's width, and a learned newline token after each row: grid x (grid + 1) visual tokens.

Inside the LLM (`llm_layers` > 0): after decoder layers `llm_start + k * llm_stride`, the hidden states of the
visual tokens (the newlines left alone) attend again, each to its cell of every encoder's projected features,
through a sampler layer of their own (queries of the LLM's width). Hooks on the decoder's layers do it, so any
Hugging Face decoder with a list of layers works (Llama, Qwen2, ...); under gradient checkpointing each aggregation
is checkpointed with its layer's function (recomputed in the backward pass, as Cambrian's are); under ZeRO-3 its
weights are gathered as any module's.

Not reproduced: Cambrian's attention masks and unpadding for images padded to a square (every image here fills
its square, as it does after a resize or centre crop, where Cambrian's masks are all true and nothing is unpadded),
and its XLA path. Equal to the reference on shared weights: tests/test_fusion.py (the figures recorded by
tests/fixtures/make_cambrian_sva_reference.py, which runs Cambrian's own modules outside this project).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..projectors import build_projector
from ..speed import decoder_layers
from .base import Fusion, FusionOptions
from .grids import resample_to_grid, windows


@dataclass
class SvaOptions(FusionOptions):
    grid: int = 24                          # the final query grid: grid x grid visual tokens (image_token_len 576)
    query_groups: list[int] | None = None   # each group's grid side (query_num_list); None: one group of `grid`
    hidden_size: int = 1024                 # D, the aggregator's width (vision_hidden_size)
    depth: int = 1                          # sampler layers per query group (connector_depth)
    num_heads: int = 16                     # Cambrian's, fixed there
    newline: bool = True                    # a learned token after each row of visual tokens (image_newline)
    llm_layers: int = 10                    # aggregation layers inside the LLM (num_of_vision_sampler_layers)
    llm_start: int = 16                     # the first decoder layer they follow (start_of_vision_sampler_layers)
    llm_stride: int = 1                     # decoder layers between them (stride_of_vision_sampler_layers)


class WindowAttention(nn.Module):
    """Queries `[N, q, q_dim]` attending to the concatenated cells of every encoder `[N, r_i, kv_i]`
    (Cambrian's `MultiKVCrossAttention`: pre-norm projections without bias, one attention over all keys)."""

    def __init__(self, q_dim: int, kv_dims: list[int], hidden: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Sequential(nn.LayerNorm(q_dim), nn.Linear(q_dim, hidden, bias=False))
        self.k = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden, bias=False)) for d in kv_dims)
        self.v = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden, bias=False)) for d in kv_dims)
        self.out = nn.Linear(hidden, q_dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, queries: torch.Tensor, cells: list[torch.Tensor]) -> torch.Tensor:
        keys = torch.cat([k(c) for k, c in zip(self.k, cells)], dim=1)
        values = torch.cat([v(c) for v, c in zip(self.v, cells)], dim=1)
        out = F.scaled_dot_product_attention(self._heads(self.q(queries)), self._heads(keys), self._heads(values))
        return self.out(out.transpose(1, 2).flatten(2))


class SamplerLayer(nn.Module):
    """Cambrian's `VisionCrossAttentionLayer`: `q + MLP(LN(x + attn(x, cells + pos)))`, `x = W_in [q ; W_c ctx]`."""

    def __init__(self, q_dim: int, context_dim: int, kv_dims: list[int], cells: list[int], hidden: int, num_heads: int):
        super().__init__()
        self.proj_context = nn.Linear(context_dim, hidden, bias=False)
        self.proj_in = nn.Linear(q_dim + hidden, hidden, bias=False)
        self.attention = WindowAttention(hidden, kv_dims, hidden, num_heads)
        self.norm = nn.LayerNorm(hidden)
        self.proj_out = nn.Sequential(nn.Linear(hidden, hidden, bias=False), nn.GELU(), nn.Linear(hidden, q_dim, bias=False))
        # a positional embedding per encoder whose cell holds more than one patch (keyed by the encoder's index)
        self.positions = nn.ParameterDict({str(i): nn.Parameter(torch.randn(n, hidden)) for i, n in enumerate(cells) if n > 1})

    def forward(self, queries: torch.Tensor, context: torch.Tensor, cells: list[torch.Tensor]) -> torch.Tensor:
        x = self.proj_in(torch.cat([queries, self.proj_context(context)], dim=-1))
        cells = [c + self.positions[str(i)].to(c.dtype) if str(i) in self.positions else c for i, c in enumerate(cells)]
        x = x + self.attention(x, cells)
        return queries + self.proj_out(self.norm(x))


class Sampler(nn.Module):
    """Cambrian's `VisionTokenSampler`: `depth` sampler layers in a row."""

    def __init__(self, depth: int, *args):
        super().__init__()
        self.layers = nn.ModuleList(SamplerLayer(*args) for _ in range(depth))

    def forward(self, queries, context, cells):
        for layer in self.layers:
            queries = layer(queries, context, cells)
        return queries


class SpatialVisionAggregator(Fusion):
    Options = SvaOptions
    min_encoders = 1
    keeps_first_projector = False

    def __init__(self, specs, llm_width, options, projector_type):
        super().__init__(specs, llm_width, options, projector_type)
        d, s = options.hidden_size, options.grid
        self.grids = [spec.grid for spec in specs]
        self.encoder_projections = nn.ModuleList(
            nn.Sequential(nn.Linear(spec.hidden_size, d), nn.GELU(), nn.Linear(d, d), nn.LayerNorm(d)) for spec in specs)
        self.queries = nn.Parameter(torch.randn(len(_groups(options)), d) / math.sqrt(d))
        self.samplers = nn.ModuleList(
            Sampler(options.depth, d, d, [d] * len(specs), self._cells(g), d, options.num_heads) for g in _groups(options))
        self.newline = nn.Parameter(torch.randn(llm_width) / math.sqrt(llm_width)) if options.newline else None
        self.llm_samplers = nn.ModuleList(
            Sampler(1, llm_width, d, [d] * len(specs), self._cells(s), d, options.num_heads) for _ in range(options.llm_layers))
        self._vision = None    # the last images' cells and context, for the layers inside the LLM
        self._queries = None   # where their visual tokens sit in the LLM's sequence (flat indices, newlines left out)

    def _cells(self, side: int) -> list[int]:
        return [(rows // side) * (cols // side) for rows, cols in self.grids]

    def build_projectors(self, specs, llm_width, projector_type):
        return [build_projector(projector_type, len(_groups(self.options)) * self.options.hidden_size, llm_width)]

    @classmethod
    def check(cls, specs, options) -> None:
        super().check(specs, options)
        sides = [options.grid, *_groups(options)]
        if min(sides) < 1 or options.query_groups == [] or options.depth < 1 or options.llm_layers < 0:
            raise ConfigError(f"MofConfig.fusion: sva needs grid, query_groups (at least one) and depth >= 1 and "
                              f"llm_layers >= 0, got grid={options.grid}, query_groups={options.query_groups}, "
                              f"depth={options.depth}, llm_layers={options.llm_layers}")
        for spec in specs:
            rows, cols = spec.grid
            bad = [s for s in sides if rows % s or cols % s]
            if bad:
                raise ConfigError(f"MofConfig.fusion: grid/query_groups side {bad[0]} does not divide encoder "
                                  f"{spec.type}'s {rows}x{cols} patch grid; choose sides that divide every encoder's grid")
        if options.hidden_size % options.num_heads:
            raise ConfigError(f"MofConfig.fusion.num_heads: {options.num_heads} does not divide hidden_size {options.hidden_size}")
        if options.llm_layers and (options.llm_start < 0 or options.llm_stride < 1):
            raise ConfigError(f"MofConfig.fusion: sva needs llm_start >= 0 and llm_stride >= 1, got "
                              f"{options.llm_start} and {options.llm_stride}")

    @classmethod
    def num_tokens(cls, specs, options) -> int:
        return options.grid * (options.grid + int(options.newline))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        n, dtype, s = features[0].shape[0], features[0].dtype, self.options.grid
        projected = [p(f) for p, f in zip(self.encoder_projections, features)]
        context = projected[0].mean(1)                                          # [n, D]
        groups = []
        for query, sampler, side in zip(self.queries, self.samplers, _groups(self.options)):
            cells = [windows(f, grid, side) for f, grid in zip(projected, self.grids)]
            q = query.to(dtype).expand(n * side * side, 1, -1)
            ctx = context.repeat_interleave(side * side, 0).unsqueeze(1)
            out = sampler(q, ctx, cells).reshape(n, side * side, -1)
            groups.append(resample_to_grid(out.float(), (side, side), (s, s)).to(out.dtype) if side != s else out)
        tokens = self.projectors[0](torch.cat(groups, dim=-1))                  # [n, s², llm_width]
        if self.llm_samplers:
            self._vision = ([windows(f, grid, s) for f, grid in zip(projected, self.grids)],
                            context.repeat_interleave(s * s, 0).unsqueeze(1))
        if self.newline is None:
            return tokens
        rows = tokens.reshape(n, s, s, -1)
        newline = self.newline.to(tokens.dtype).expand(n, s, 1, -1)
        return torch.cat([rows, newline], dim=2).reshape(n, s * (s + 1), -1)

    # ------------------------------------------------------------------ the layers inside the LLM
    def attach(self, language_model: nn.Module) -> None:
        """Run `llm_samplers[k]` on the visual tokens after decoder layer `llm_start + k * llm_stride`."""
        if not self.llm_samplers:
            return
        layers = decoder_layers(language_model)
        if layers is None:
            raise ConfigError(f"MofConfig.fusion: sva's layers inside the LLM need its list of decoder layers; "
                              f"{type(language_model).__name__} has none that mof can find (set llm_layers: 0)")
        at = [self.options.llm_start + k * self.options.llm_stride for k in range(len(self.llm_samplers))]
        if at[-1] >= len(layers):
            raise ConfigError(f"MofConfig.fusion: sva's aggregation layers follow decoder layers {at[0]}..{at[-1]} "
                              f"(llm_start + k * llm_stride, k < llm_layers), but the LLM has {len(layers)}; lower "
                              "llm_layers, llm_start or llm_stride")
        for k, i in enumerate(at):   # a bound method, so a deep copy of the model hooks its own fusion
            layers[i].register_forward_hook(partial(self._after_layer, k))

    def place(self, image_mask: torch.Tensor | None) -> None:
        """Where this forward's visual tokens are (`image_mask` `[B, L]`), or None when it has no images (a decoding
        step, a text-only batch): the layers inside the LLM then leave the hidden states alone."""
        if not self.llm_samplers:
            return
        if image_mask is None or self._vision is None:
            self._vision = self._queries = None
            return
        s = self.options.grid
        flat = image_mask.reshape(-1).nonzero().squeeze(1).reshape(-1, s, s + int(self.options.newline))
        self._queries = flat[:, :, :s].reshape(-1)

    def _after_layer(self, k: int, module, args, output):
        """The forward hook on a decoder layer: its output with the visual tokens' hidden states aggregated again."""
        if self._queries is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        flat = hidden.reshape(-1, hidden.shape[-1])
        cells, context = self._vision
        q = flat[self._queries].unsqueeze(1)
        sampler = self.llm_samplers[k]
        args = (q, context.to(q.dtype), *[c.to(q.dtype) for c in cells])
        if getattr(module, "gradient_checkpointing", False) and module.training and torch.is_grad_enabled():
            # the decoder layer is checkpointed (its forward, not this hook): so is its aggregation, as in Cambrian
            new = module._gradient_checkpointing_func(lambda q, c, *cells: sampler(q, c, list(cells)), *args)
        else:
            new = sampler(args[0], args[1], list(args[2:]))
        new = new.squeeze(1)
        hidden = flat.index_copy(0, self._queries, new.to(flat.dtype)).reshape(hidden.shape)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _groups(options: SvaOptions) -> list[int]:
    return list(options.query_groups) if options.query_groups is not None else [options.grid]
