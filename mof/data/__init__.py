from .conversation import IGNORE_INDEX, ConversationError, format_mcq_prompt, get_template, normalize_turns
from .datamodule import LabelMaskingError, MofDataModule
from .images import MofImageProcessor, load_image
from .tokenizer import load_tokenizer

__all__ = ["IGNORE_INDEX", "ConversationError", "LabelMaskingError", "MofDataModule", "MofImageProcessor",
           "format_mcq_prompt", "get_template", "load_image", "load_tokenizer", "normalize_turns"]
