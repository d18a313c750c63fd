"""mof: mixture-of-features multimodal LLMs (CLIP + DINOv2 and friends, LLaVA-style)."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .checkpoints.layout import register_legacy_layout
from .model import FUSIONS, MofConfig, MofForConditionalGeneration, MofModel, paper_config, tiny_config

AutoConfig.register(MofConfig.model_type, MofConfig, exist_ok=True)
AutoModel.register(MofConfig, MofModel, exist_ok=True)
AutoModelForImageTextToText.register(MofConfig, MofForConditionalGeneration, exist_ok=True)
register_legacy_layout(MofConfig.model_type)  # older versions' weight names, renamed on load

__all__ = ["MofConfig", "MofForConditionalGeneration", "MofModel", "FUSIONS", "paper_config", "tiny_config"]
__version__ = "0.1.0"
