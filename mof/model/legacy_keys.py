"""Weight names from before the model was split into `MofModel` + `lm_head` (mof <= 0.1), and their new places.

transformers applies the renames when it loads a `save_pretrained` folder (and reverts them when it saves, as it
does for LLaVA, so folders keep the layout older versions read); Lightning checkpoints go through
`migrate_legacy_keys`.
"""

from __future__ import annotations

import re

from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming

# (old, new), first match wins
LEGACY_RENAMES = (
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model.language_model."),
    ("vision_encoders.", "model.vision_encoders."),
    ("fusion.", "model.fusion."),
)


def register_legacy_layout(model_type: str) -> None:
    renames = [WeightRenaming(source_patterns="^" + re.escape(old.rstrip(".")), target_patterns=new.rstrip("."))
               for old, new in LEGACY_RENAMES]
    register_checkpoint_conversion_mapping(model_type, renames, overwrite=True)


def migrate_legacy_keys(state: dict, prefixes: tuple[str, ...] = ("",)) -> dict:
    """`state` with every old-layout key renamed; keys already in the new layout are kept as they are.
    `prefixes` are the wrappers' prefixes a key may start with (e.g. `model.` in a Lightning checkpoint)."""
    prefixes = tuple(sorted(prefixes, key=len, reverse=True))
    return {_rename(key, prefixes): value for key, value in state.items()}


def _rename(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            rest = key[len(prefix):]
            for old, new in LEGACY_RENAMES:
                if rest.startswith(old):
                    return prefix + new + rest[len(old):]
            return key
    return key


PEFT_PREFIXES = ("", "base_model.model.")  # a model's own keys, and those of a peft-wrapped one
LIGHTNING_PREFIXES = tuple("model." + p for p in PEFT_PREFIXES)  # the same inside a LightningModule
