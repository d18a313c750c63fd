from .configuration_mof import MofConfig
from .fusion import FUSIONS
from .modeling_mof import MofForConditionalGeneration
from .presets import paper_config, tiny_config
from .projectors import PROJECTORS
from .vision_encoders import ENCODER_FAMILIES, EncoderSpec

__all__ = ["MofConfig", "MofForConditionalGeneration", "EncoderSpec", "ENCODER_FAMILIES", "FUSIONS", "PROJECTORS",
           "paper_config", "tiny_config"]
