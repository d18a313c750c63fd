"""Model FLOPs of a training step: what MFU divides by the device's peak (Lightning's `ThroughputMonitor` during
training, `bench/gpu.py` on a lent GPU). Counted on the real tokens: padding and activation recomputation are not
model FLOPs."""

from __future__ import annotations

import torch


def sample_lengths(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   position_ids: torch.Tensor | None = None) -> list[int]:
    """The real length of every sample of a batch: a padded row's unmasked positions, or a packed row's segments (its
    position ids restart at each sample)."""
    if attention_mask is not None:
        return [int(n) for n in attention_mask.sum(dim=1).tolist()]
    if position_ids is not None:
        starts = torch.nonzero(position_ids == 0, as_tuple=False)
        lengths = []
        for row in range(position_ids.shape[0]):
            cuts = starts[starts[:, 0] == row, 1].tolist() + [position_ids.shape[1]]
            lengths += [b - a for a, b in zip(cuts, cuts[1:]) if b > a]
        return lengths
    return [input_ids.shape[1]] * input_ids.shape[0]


def training_flops(model, lengths: list[int], images: int) -> float:
    """6 N per token for the LLM and projectors (forward and backward) plus causal attention's 12 L h s per token of
    a sample of s tokens, and 2 N per visual token for the frozen encoders' forward."""
    m = getattr(model, "model", model)
    cfg = model.config.text_config
    n_llm = sum(p.numel() for p in m.language_model.parameters()) + sum(p.numel() for p in model.lm_head.parameters())
    n_projector = sum(p.numel() for p in m.fusion.parameters())
    llm = sum(6 * n_llm * s + 12 * cfg.num_hidden_layers * cfg.hidden_size * s * s for s in lengths)
    projectors = 6 * n_projector * images * model.config.encoder_specs[0].num_tokens
    vision = sum(2 * sum(p.numel() for p in enc.parameters()) * (enc.spec.num_tokens + enc.num_prefix_tokens) * images
                 for enc in m.vision_encoders)
    return float(llm + projectors + vision)
