"""Records, templates, images, the dataset, collator and datamodule, synthetic data, the tokenizer.

The names below are imported on first use (PEP 562), so that `python -m mof.data.synthetic` runs the module once,
not after `import mof.data` has already imported it."""

import importlib

_HOMES = {"IGNORE_INDEX": "conversation", "ConversationError": "conversation", "get_template": "conversation",
          "normalize_turns": "conversation", "DataCheckError": "datamodule", "MofDataModule": "datamodule",
          "MofImageProcessor": "images", "load_image": "images", "load_tokenizer": "tokenizer"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'mof.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
