"""Benchmarks in their published file layouts, one file each behind `base.Benchmark`; `BENCHMARKS` is the registry
(`benchmark=<name>`)."""

from .base import Benchmark, Item
from .mmvp import MMVP
from .mmvp_vlm import MMVPVLM
from .pope import POPE
from .synthetic import Synthetic
from .synthetic_pope import SyntheticPOPE
from .synthetic_vlm import SyntheticVLM
from ...errors import ConfigError, unknown

BENCHMARKS: dict[str, type[Benchmark]] = {b.name: b for b in (MMVP, Synthetic, MMVPVLM, POPE, SyntheticPOPE, SyntheticVLM)}


def get_benchmark(name: str) -> type[Benchmark]:
    if name not in BENCHMARKS:
        raise ConfigError(unknown("benchmark.name", "benchmark", name, BENCHMARKS))
    return BENCHMARKS[name]


__all__ = ["BENCHMARKS", "Benchmark", "Item", "get_benchmark"]
