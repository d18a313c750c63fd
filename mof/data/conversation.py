"""Conversation templates with labels built by construction.

`plain` and `vicuna_v1` render a conversation as LLaVA does and tokenise it as LLaVA's `tokenizer_image_token`
(token for token); which tokens carry a label follows from the character spans of the answers, never from
re-splitting or counting. `chat_template` uses the tokenizer's own template, turn by turn. `<image>` expands to
the model's visual tokens. The same code renders training samples and evaluation prompts.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from ..errors import ConfigError, unknown

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
ROLES = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}


class ConversationError(ValueError):
    """A sample that cannot be trained on; `reason` is the counter key under which it is skipped."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def num_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def normalize_turns(conversations, has_image: bool) -> list[tuple[str, str]]:
    """Validate a LLaVA `conversations` list into `[(role, text)]` alternating user/assistant."""
    if not isinstance(conversations, list) or not conversations:
        raise ConversationError("no_conversations", "expected a non-empty 'conversations' list")
    turns = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ConversationError("bad_turn", f"turn {i} lacks 'from'/'value'")
        role = ROLES.get(turn["from"]) if isinstance(turn["from"], str) else None
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ConversationError("bad_role_order", f"turn {i} is from {turn['from']!r}, expected {expected}")
        text = turn["value"]
        if not isinstance(text, str) or not text.strip():
            raise ConversationError("empty_text", f"turn {i} has no text")
        turns.append((role, text))
    if len(turns) % 2:
        raise ConversationError("bad_role_order", "the conversation ends with a user turn")
    n_placeholders = [t.count(IMAGE_PLACEHOLDER) for _, t in turns]
    if sum(n_placeholders[1:]) or n_placeholders[0] > 1:
        raise ConversationError("misplaced_image_token", "<image> may appear once, in the first user turn")
    if has_image:  # LLaVA's preprocess_multimodal: the image first, then the rest of the turn, stripped
        turns[0] = ("user", (IMAGE_PLACEHOLDER + "\n" + turns[0][1].replace(IMAGE_PLACEHOLDER, "").strip()).strip())
    if not has_image and n_placeholders[0]:
        raise ConversationError("image_token_without_image", "the text has <image> but the sample has no image")
    return turns


_DROPS_LEADING_SPACE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def drops_leading_space(tokenizer) -> bool:
    """Whether `tokenizer` encodes " a" exactly as "a" while it keeps spaces elsewhere. transformers 5's Llama tokenizers do: their Metaspace
    pre-tokenizer prepends "▁" only where the text does not already start with one, so " hello" becomes `▁hello`
    where SentencePiece, and the slow tokenizer LLaVA trained with, give `▁` `▁hello`."""
    try:
        return _DROPS_LEADING_SPACE[tokenizer]
    except (KeyError, TypeError):
        pass
    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    # a tokenizer whose normaliser collapses spaces (as its SentencePiece model does) loses nothing
    drops = ids(" a") == ids("a") and ids("a  b") != ids("a b")
    try:
        _DROPS_LEADING_SPACE[tokenizer] = drops
    except TypeError:  # not weakly referenceable: asked again next time
        pass
    return drops


def tokenize_chunk(tokenizer, chunk: str) -> tuple[list[int], list[tuple[int, int]]]:
    """`(ids, character offsets)` of one text chunk as LLaVA's slow Llama tokenizer gives them: a chunk that starts
    with a space keeps the `▁` of that space (one more space in, offsets shifted back, the `▁` spanning the space)
    where the tokenizer would drop it."""
    extra = 1 if chunk[:1] == " " and drops_leading_space(tokenizer) else 0
    enc = tokenizer(" " * extra + chunk, return_offsets_mapping=True)
    offsets = [(max(0, s - extra), max(1, e - extra)) if e > s else (s, e) for s, e in enc["offset_mapping"]]
    return list(enc["input_ids"]), offsets


class Template:
    name = ""

    def encode(self, turns, tokenizer, image_token_id: int, num_image_tokens: int) -> Encoded:
        """Token ids and labels of a conversation (`turns` end with an assistant turn)."""
        raise NotImplementedError

    def encode_prompt(self, turns, tokenizer, image_token_id: int, num_image_tokens: int) -> list[int]:
        """The ids of a generation prompt (`turns` end with a user turn): up to where the answer begins."""
        return self.encode(turns, tokenizer, image_token_id, num_image_tokens).input_ids


@dataclass
class Rendered:
    """A conversation as text, with the character spans that are supervised and those that are data text."""

    text: str
    supervised: list[tuple[int, int]]
    content: list[tuple[int, int]]


class RenderedTemplate(Template):
    """LLaVA's way: render the conversation to text, split it at `<image>`, tokenise each chunk whole (the first
    chunk's BOS kept, the others' dropped: `tokenizer_image_token`), so `input_ids` equal LLaVA's token for token.
    Labels come from character offsets of the supervised spans, not from LLaVA's length arithmetic, so an answer
    holding a literal `</s>` or `ASSISTANT:` stays supervised (LLaVA masks such a sample whole). A special token
    that comes from data text rather than the template is tokenised as plain text."""

    def render(self, turns, tokenizer) -> Rendered:
        raise NotImplementedError

    def encode(self, turns, tokenizer, image_token_id: int, num_image_tokens: int) -> Encoded:
        r = self.render(turns, tokenizer)
        bos, specials = tokenizer.bos_token_id, set(tokenizer.all_special_ids)
        ids, labels, pos = [], [], 0

        def add(tokens, start, end):
            supervised = any(start < e and end > s for s, e in r.supervised)
            ids.extend(tokens)
            labels.extend(t if supervised else IGNORE_INDEX for t in tokens)

        for k, chunk in enumerate(r.text.split(IMAGE_PLACEHOLDER)):
            if k:
                ids.extend([image_token_id] * num_image_tokens)
                labels.extend([IGNORE_INDEX] * num_image_tokens)
                pos += len(IMAGE_PLACEHOLDER)
            tokens, offsets = tokenize_chunk(tokenizer, chunk)
            if tokens and tokens[0] == bos and bos is not None:
                if k:
                    tokens, offsets = tokens[1:], offsets[1:]
            elif k == 0 and bos is not None:  # a tokenizer that adds no BOS (mof's tiny one): mof's convention
                tokens, offsets = [bos, *tokens], [(0, 0), *offsets]
            for token, (s, e) in zip(tokens, offsets):
                start, end = pos + s, pos + e
                if token in specials and e > s and any(cs <= start and end <= ce for cs, ce in r.content):
                    literal = tokenizer.encode(r.text[start:end], add_special_tokens=False, split_special_tokens=True)
                    add(literal, start, end)
                else:
                    add([token], start, end)
            pos += len(chunk)
        return Encoded(ids, labels)


class PlainTemplate(RenderedTemplate):
    """Stage 1 (LLaVA `plain`): `<image>` + caption + `\n`; the caption and its `\n` are supervised, no EOS."""

    name = "plain"
    sep = "\n"

    def render(self, turns, tokenizer) -> Rendered:
        text, supervised, content = "", [], []
        for role, turn in turns:
            if role == "user":
                piece = IMAGE_PLACEHOLDER if IMAGE_PLACEHOLDER in turn else turn  # LLaVA keeps only the image
                if piece == turn:
                    content.append((len(text), len(text) + len(turn)))
                text += piece
            else:
                content.append((len(text), len(text) + len(turn)))
                supervised.append((len(text), len(text) + len(turn) + len(self.sep)))
                text += turn + self.sep
        return Rendered(text, supervised, content)


class VicunaV1Template(RenderedTemplate):
    """LLaVA-1.5 `vicuna_v1` (`conv_vicuna_v1`, separator style TWO): `SYSTEM USER: q ASSISTANT: a</s>USER: ...`;
    supervised: each answer from the space after `ASSISTANT:` through its `</s>`, as LLaVA."""

    name = "vicuna_v1"

    def __init__(self, system: str = VICUNA_SYSTEM):
        self.system = system

    def render(self, turns, tokenizer) -> Rendered:
        text, supervised, content = self.system + " ", [], []
        eos = tokenizer.eos_token or ""
        for role, turn in turns:
            if role == "user":
                text += "USER: "
                content.append((len(text), len(text) + len(turn)))
                text += turn + " ASSISTANT:"
            else:
                start = len(text)
                content.append((start + 1, start + 1 + len(turn)))
                text += " " + turn + eos
                supervised.append((start, len(text)))
        return Rendered(text, supervised, content)


class ChatTemplate(Template):
    """The tokenizer's own chat template (Llama 3, Qwen, ...). Each turn's text is the difference
    between renderings of the conversation with and without it; assistant turns, with their
    end-of-turn markup, are supervised."""

    name = "chat_template"

    def __init__(self, system: str | None = None):
        self.system = system

    def _render(self, tokenizer, messages, add_generation_prompt):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def segments(self, turns, tokenizer):
        """`(rendered text, supervised, the turn's own text)` per turn."""
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError("template 'chat_template': the tokenizer has no chat template")
        messages = [{"role": "system", "content": self.system}] if self.system else []
        rendered = self._render(tokenizer, messages, False) if messages else ""
        for role, text in turns:
            messages.append({"role": role, "content": text})
            # A user turn is rendered with the assistant header that follows it, which is not supervised.
            full = self._render(tokenizer, messages, add_generation_prompt=role == "user")
            if not full.startswith(rendered):
                raise ConfigError("template 'chat_template': the chat template does not render conversations "
                                 "incrementally (a prefix changed when a turn was added)")
            yield full[len(rendered):], role == "assistant", text
            rendered = full

    def encode(self, turns, tokenizer, image_token_id: int, num_image_tokens: int) -> Encoded:
        # The rendered markup is special-token text (`<|im_end|>`, `</s>`): it is tokenised with special tokens
        # recognised. The data text inside it is not markup: a special token written in it (`</s>ASSISTANT: ...`)
        # is tokenised as plain text, so data cannot end a turn or open one. A template that rewrites the text
        # (so it cannot be found in the rendering) makes such a sample a counted skip.
        specials = [t for t in tokenizer.all_special_tokens if t != IMAGE_PLACEHOLDER]
        ids, labels = [], []
        for content, supervised, text in self.segments(turns, tokenizer):
            pieces = [(content, False)]
            if any(t in text for t in specials):
                at = content.find(text)
                if at < 0:
                    raise ConversationError("special_token_in_text", "the chat template rewrote a turn that holds "
                                            "a special token")
                pieces = [(content[:at], False), (text, True), (content[at + len(text):], False)]
            tokens = []
            for piece, literal in pieces:
                for k, part in enumerate(piece.split(IMAGE_PLACEHOLDER)):
                    if k:
                        tokens += [image_token_id] * num_image_tokens
                    if part:
                        tokens += tokenizer.encode(part, add_special_tokens=False, split_special_tokens=literal)
            ids += tokens
            labels += [t if supervised and t != image_token_id else IGNORE_INDEX for t in tokens]
        return Encoded(ids, labels)


TEMPLATES = {"plain": PlainTemplate, "vicuna_v1": VicunaV1Template, "chat_template": ChatTemplate}


def get_template(name: str, **kwargs) -> Template:
    if name not in TEMPLATES:
        raise ConfigError(unknown("data.template", "conversation template", name, TEMPLATES))
    return TEMPLATES[name](**kwargs)
