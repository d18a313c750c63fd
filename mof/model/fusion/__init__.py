"""Fusions: how several encoders' patch features become the LLM's visual tokens.

One file per fusion behind the `Fusion` interface (`base.py`); adding one is a file and an entry here.
`MofConfig.fusion` is a section `{"type": <name>, **options}`.
"""

from __future__ import annotations

from .additive import AdditiveFusion
from .base import Fusion, FusionOptions, options_from_dict
from .concat import ConcatFusion
from .interleaved import InterleavedFusion
from .none import FirstEncoderOnly
from .sva import SpatialVisionAggregator
from .sva_connector import SvaConnector
from ...errors import ConfigError, unknown

FUSIONS: dict[str, type[Fusion]] = {
    "none": FirstEncoderOnly,
    "additive": AdditiveFusion,
    "interleaved": InterleavedFusion,
    "concat": ConcatFusion,
    "sva": SpatialVisionAggregator,
    "sva_connector": SvaConnector,
}


def get_fusion(name: str) -> type[Fusion]:
    if name not in FUSIONS:
        raise ConfigError(unknown("MofConfig.fusion", "fusion type", name, FUSIONS))
    return FUSIONS[name]


def parse_fusion(section: dict) -> tuple[type[Fusion], FusionOptions]:
    """`{"type": name, **options}` -> the fusion class and its typed options."""
    values = dict(section)
    name = values.pop("type", None)
    if name is None:
        raise ConfigError(f"MofConfig.fusion: expected a 'type' key (one of {', '.join(FUSIONS)}), got {section}")
    cls = get_fusion(name)
    return cls, options_from_dict(cls, name, values)


__all__ = ["FUSIONS", "Fusion", "FusionOptions", "get_fusion", "parse_fusion"]
