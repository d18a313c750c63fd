from .conversation import IGNORE_INDEX, ConversationError, get_template, normalize_turns
from .datamodule import DataCheckError, MofDataModule
from .images import MofImageProcessor, load_image
from .tokenizer import load_tokenizer

__all__ = ["IGNORE_INDEX", "ConversationError", "DataCheckError", "MofDataModule", "MofImageProcessor", "get_template",
           "load_image", "load_tokenizer", "normalize_turns"]
