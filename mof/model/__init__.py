from .configuration_mof import MofConfig
from .fusion import FUSIONS
from .modeling_mof import MofForConditionalGeneration, MofModel
from .presets import paper_config, tiny_config
from .projectors import PROJECTORS
from .vision_encoders import ENCODER_FAMILIES, EncoderSpec

__all__ = ["MofConfig", "MofForConditionalGeneration", "MofModel", "EncoderSpec", "ENCODER_FAMILIES", "FUSIONS", "PROJECTORS",
           "paper_config", "tiny_config"]
