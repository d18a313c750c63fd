"""mof: mixture-of-features multimodal LLMs (CLIP + DINOv2 and friends, LLaVA-style)."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .model import FUSIONS, MofConfig, MofForConditionalGeneration, MofModel, paper_config, tiny_config

AutoConfig.register(MofConfig.model_type, MofConfig, exist_ok=True)
AutoModel.register(MofConfig, MofModel, exist_ok=True)
AutoModelForImageTextToText.register(MofConfig, MofForConditionalGeneration, exist_ok=True)

__all__ = ["MofConfig", "MofForConditionalGeneration", "MofModel", "FUSIONS", "paper_config", "tiny_config"]
__version__ = "0.1.0"
