"""Tokenizers: the LLM's own for real presets; a small real BPE tokenizer for the tiny default model.

The tiny tokenizer follows Llama/Vicuna conventions (`<s>`/`</s>`, `<unk>`, a chat template) and is
committed under `mof/assets/tiny-tokenizer`; `python -m mof.data.tokenizer` regenerates it
deterministically from the synthetic corpus.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..model.weights import require_available
from .conversation import VICUNA_SYSTEM
from .prompts import MCQ_INSTRUCTION
from .synthetic import corpus

TINY_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-tokenizer"
TINY_SPECIALS = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]  # ids 0..4; <image> = 3 (tiny preset's image_token_id)
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + ' ' }}"
    "{% elif m['role'] == 'user' %}{{ 'USER: ' + m['content'] + ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_tiny_tokenizer(out: Path = TINY_TOKENIZER_DIR, vocab_size: int = 1024):
    texts = corpus() + [VICUNA_SYSTEM, MCQ_INSTRUCTION, "USER: ASSISTANT:", "The answer is"] * 20
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=TINY_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", additional_special_tokens=["<image>"])
    fast.chat_template = TINY_CHAT_TEMPLATE
    fast.padding_side = "right"
    fast.save_pretrained(out)
    return fast


def load_tokenizer(name_or_path: str = "tiny"):
    """`tiny` (the committed tiny tokenizer), a local directory or a hub id."""
    if name_or_path == "tiny":
        name_or_path = str(TINY_TOKENIZER_DIR)
    else:
        require_available(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token_id is None:  # Llama/Vicuna have none; LLaVA pads with <unk>
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


if __name__ == "__main__":
    t = build_tiny_tokenizer()
    print(f"wrote {TINY_TOKENIZER_DIR} ({len(t)} tokens)")
