"""The on-disk weight layout: the prefixes each wrapper puts before a model's own weight names, and the names of
older versions (mof <= 0.1, before the model was split into `MofModel` + `lm_head`) with their current places.

transformers applies `LEGACY_RENAMES` when it loads a `save_pretrained` folder (and reverts them when it saves, as
it does for LLaVA, so folders keep the layout older versions read; registered in `mof/__init__.py`); Lightning
checkpoints go through `migrate_legacy_keys` once, when they are read (`files.load_training_checkpoint`).
"""

from __future__ import annotations

import re

from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming

LIGHTNING = "model."  # the LightningModule's attribute that holds the model
PEFT = "base_model.model."  # peft's wrapper (LoRA runs)
PEFT_SAVED = "modules_to_save.default."  # peft's trained copy of a module it does not adapt (the fusion)
DEEPSPEED = "_forward_module."  # Lightning's DeepSpeed wrapper, in consolidated ZeRO weights
FUSION = "model.fusion."  # the projectors (projectors and any aggregator) inside `MofForConditionalGeneration`

PEFT_PREFIXES = ("", PEFT)  # a model's own keys, and those of a peft-wrapped one
LIGHTNING_PREFIXES = tuple(LIGHTNING + p for p in PEFT_PREFIXES)  # the same inside a LightningModule
FUSION_PREFIXES = (FUSION, PEFT + FUSION + PEFT_SAVED, PEFT + FUSION)  # first match wins

# (old, new), first match wins
LEGACY_RENAMES = (
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model.language_model."),
    ("vision_encoders.", "model.vision_encoders."),
    ("fusion.", "model.fusion."),
)


def strip_prefix(state: dict, prefix: str) -> dict:
    """`state` with `prefix` removed from every key that has it."""
    return {k.removeprefix(prefix): v for k, v in state.items()}


def fusion_state(state: dict) -> dict:
    """The fusion's own weights (keys relative to the fusion) in a model's state, peft-wrapped or not."""
    found = {}
    for key, value in state.items():
        prefix = next((p for p in FUSION_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            found[key[len(prefix):]] = value
    return found


def register_legacy_layout(model_type: str) -> None:
    renames = [WeightRenaming(source_patterns="^" + re.escape(old.rstrip(".")), target_patterns=new.rstrip("."))
               for old, new in LEGACY_RENAMES]
    register_checkpoint_conversion_mapping(model_type, renames, overwrite=True)


def migrate_legacy_keys(state: dict, prefixes: tuple[str, ...] = ("",)) -> dict:
    """`state` with every old-layout key renamed; keys already in the new layout are kept as they are.
    `prefixes` are the wrappers' prefixes a key may start with (e.g. `LIGHTNING_PREFIXES`)."""
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
