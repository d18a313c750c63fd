"""Adapters from an encoder's width to the LLM's width (LLaVA's `linear` and `mlp2x_gelu`)."""

from torch import nn


def build_projector(kind: str, in_features: int, out_features: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, out_features)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_features, out_features), nn.GELU(), nn.Linear(out_features, out_features))
    raise ValueError(f"unknown projector_type {kind!r}; known: linear, mlp2x_gelu")
