from .configuration_mof import FUSION_MODES, MofConfig
from .modeling_mof import MofForConditionalGeneration
from .presets import paper_config, tiny_config
from .vision_encoders import ENCODER_FAMILIES, EncoderSpec

__all__ = ["MofConfig", "MofForConditionalGeneration", "EncoderSpec", "ENCODER_FAMILIES", "FUSION_MODES",
           "paper_config", "tiny_config"]
