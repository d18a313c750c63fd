"""Conversation templates with labels built by construction.

A template turns a conversation into segments `(text or token ids, supervised)`; the segments are
tokenised one by one and concatenated, so which tokens carry a label is decided while building the
sequence, never by re-splitting a rendered string. `<image>` expands to the model's visual tokens.
The same code renders training samples and evaluation prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    if has_image and not n_placeholders[0]:
        turns[0] = ("user", IMAGE_PLACEHOLDER + "\n" + turns[0][1])
    if not has_image and n_placeholders[0]:
        raise ConversationError("image_token_without_image", "the text has <image> but the sample has no image")
    return turns


class Template:
    name = ""
    # Data text is plain text: a literal `</s>` or `<pad>` in a turn is tokenised as characters, never as the
    # control token. (Templates whose markup is itself special-token text, like chat templates, cannot.)
    split_special_tokens = True

    def segments(self, turns, tokenizer):
        """Yield `(text | [ids], supervised)`. When `turns` ends with a user turn (a generation prompt), the
        segments end where the assistant's answer begins."""
        raise NotImplementedError

    def encode(self, turns, tokenizer, image_token_id: int, num_image_tokens: int) -> Encoded:
        return _tokenize(self.segments(turns, tokenizer), tokenizer, image_token_id, num_image_tokens,
                         self.split_special_tokens)

    def encode_prompt(self, turns, tokenizer, image_token_id: int, num_image_tokens: int) -> list[int]:
        return _tokenize(self.segments(turns, tokenizer), tokenizer, image_token_id, num_image_tokens,
                         self.split_special_tokens).input_ids


def _tokenize(segments, tokenizer, image_token_id: int, num_image_tokens: int, split_special_tokens: bool) -> Encoded:
    ids, labels = [], []
    for content, supervised in segments:
        if isinstance(content, str):
            pieces = content.split(IMAGE_PLACEHOLDER)
            tokens = []
            for k, piece in enumerate(pieces):
                if k:
                    tokens += [image_token_id] * num_image_tokens
                if piece:
                    tokens += tokenizer.encode(piece, add_special_tokens=False, split_special_tokens=split_special_tokens)
        else:
            tokens = list(content)
        ids += tokens
        labels += [t if supervised and t != image_token_id else IGNORE_INDEX for t in tokens]
    return Encoded(ids, labels)


def _bos(tokenizer):
    return [[tokenizer.bos_token_id], False] if tokenizer.bos_token_id is not None else None


class PlainTemplate(Template):
    """Stage 1 (LLaVA `plain`): the image, then the caption; only the caption is supervised."""

    name = "plain"

    def segments(self, turns, tokenizer):
        if (bos := _bos(tokenizer)) is not None:
            yield bos
        for role, text in turns:
            if role == "user":
                yield IMAGE_PLACEHOLDER if IMAGE_PLACEHOLDER in text else text, False
            else:
                yield text, True
                yield [tokenizer.eos_token_id], True


class VicunaV1Template(Template):
    """LLaVA-1.5 `vicuna_v1`: `SYSTEM USER: q ASSISTANT: a</s>USER: ...`."""

    name = "vicuna_v1"

    def __init__(self, system: str = VICUNA_SYSTEM):
        self.system = system

    def segments(self, turns, tokenizer):
        if (bos := _bos(tokenizer)) is not None:
            yield bos
        yield self.system + " ", False
        for role, text in turns:
            if role == "user":
                yield f"USER: {text} ASSISTANT:", False
            else:
                yield " " + text, True
                yield [tokenizer.eos_token_id], True


class ChatTemplate(Template):
    """The tokenizer's own chat template (Llama 3, Qwen, ...). Each turn's text is the difference
    between renderings of the conversation with and without it; assistant turns, with their
    end-of-turn markup, are supervised."""

    name = "chat_template"
    split_special_tokens = False

    def __init__(self, system: str | None = None):
        self.system = system

    def _render(self, tokenizer, messages, add_generation_prompt):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def segments(self, turns, tokenizer):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("template 'chat_template': the tokenizer has no chat template")
        messages = [{"role": "system", "content": self.system}] if self.system else []
        rendered = self._render(tokenizer, messages, False) if messages else ""
        for role, text in turns:
            messages.append({"role": role, "content": text})
            # A user turn is rendered with the assistant header that follows it, which is not supervised.
            full = self._render(tokenizer, messages, add_generation_prompt=role == "user")
            if not full.startswith(rendered):
                raise ValueError("template 'chat_template': the chat template does not render conversations "
                                 "incrementally (a prefix changed when a turn was added)")
            yield full[len(rendered):], role == "assistant"
            rendered = full


TEMPLATES = {"plain": PlainTemplate, "vicuna_v1": VicunaV1Template, "chat_template": ChatTemplate}


def get_template(name: str, **kwargs) -> Template:
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name](**kwargs)
