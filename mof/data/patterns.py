"""The nine visual patterns of MMVP (Tong et al. 2024), named as MMVP-VLM names them, and the other names they go
by (the paper's figures, the synthetic data), in the order of the original MMVP-VLM script (15 pairs each): one home, so that per-pattern scores of MMVP, MMVP-VLM and the
synthetic benchmarks line up under the same names."""

from __future__ import annotations

PATTERNS = ("Orientation and Direction", "Presence of Specific Features", "State and Condition", "Quantity and Count",
            "Positional and Relational Context", "Color and Appearance", "Structural Characteristics", "Texts",
            "Viewpoint and Perspective")
_ALIASES = {"structural and physical characteristics": "Structural Characteristics", "text": "Texts",
            "colour and appearance": "Color and Appearance"}


def canonical_pattern(name: str) -> str:
    """One of `PATTERNS` for any of its names (any case); other names are kept as they are (own benchmarks)."""
    key = name.strip().lower()
    return next((p for p in PATTERNS if p.lower() == key), _ALIASES.get(key, name.strip()))
