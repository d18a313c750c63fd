"""Projectors from an encoder's width to the LLM's width: LLaVA's `linear` and `mlp2x_gelu`, prismatic's
`fused_gelu_mlp` (Linear to 4x the input width, GELU, Linear, GELU, Linear). Adding one is an entry here."""

from torch import nn
from ..errors import ConfigError, unknown


def _linear(i: int, o: int) -> nn.Module:
    return nn.Linear(i, o)


def _mlp2x_gelu(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, o), nn.GELU(), nn.Linear(o, o))


def _fused_gelu_mlp(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, 4 * i), nn.GELU(), nn.Linear(4 * i, o), nn.GELU(), nn.Linear(o, o))


PROJECTORS = {"linear": _linear, "mlp2x_gelu": _mlp2x_gelu, "fused_gelu_mlp": _fused_gelu_mlp}


def build_projector(kind: str, in_features: int, out_features: int) -> nn.Module:
    if kind not in PROJECTORS:
        raise ConfigError(unknown("MofConfig.projector_type", "projector", kind, PROJECTORS))
    return PROJECTORS[kind](in_features, out_features)
