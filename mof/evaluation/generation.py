"""Batched, deterministic (greedy) answering of multiple-choice image questions."""

from __future__ import annotations

import torch

from ..data.conversation import IMAGE_PLACEHOLDER, get_template
from ..data.images import ImageError
from .loading import Loaded
from .prompts import MCQ_SUFFIX, format_mcq_prompt
from .scoring import parse_response


def prompt_ids(loaded: Loaded, template, question: str, options: str, suffix: str | None) -> list[int]:
    text = IMAGE_PLACEHOLDER + "\n" + format_mcq_prompt(question, options, suffix)
    cfg = loaded.model.config
    return template.encode_prompt([("user", text)], loaded.tokenizer, cfg.image_token_id, cfg.num_visual_tokens)


@torch.no_grad()
def answer(loaded: Loaded, questions, template_name: str, batch_size: int = 16, suffix: str | None = MCQ_SUFFIX,
           max_new_tokens: int = 12) -> list[dict]:
    """One prediction dict per question; an unreadable image makes that question unanswerable (wrong, counted)."""
    template = get_template(template_name)
    tok, model = loaded.tokenizer, loaded.model
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    predictions = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start:start + batch_size]
        ready, pixels = [], []
        for q in chunk:
            base = {"index": q.index, "question": q.question, "options": q.options, "answer": q.answer,
                    "pattern": q.pattern}
            try:
                pixels.append(loaded.image_processor.load(q.image))
                ready.append((q, base))
            except ImageError as e:
                predictions.append({**base, "response": None, "parsed": None, "correct": False, "error": str(e)})
        if not ready:
            continue
        ids = [prompt_ids(loaded, template, q.question, q.options, suffix) for q, _ in ready]
        length = max(map(len, ids))
        input_ids = torch.full((len(ids), length), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(ids):  # left padding: every prompt ends where generation starts
            input_ids[row, length - len(seq):] = torch.tensor(seq)
            mask[row, length - len(seq):] = 1
        pixel_values = [torch.stack(per_encoder).to(device) for per_encoder in zip(*pixels)]
        out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), pixel_values=pixel_values,
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                             eos_token_id=tok.eos_token_id)
        responses = tok.batch_decode(out[:, length:], skip_special_tokens=True)
        for (q, base), response in zip(ready, responses):
            parsed = parse_response(response, q.options)
            predictions.append({**base, "response": response.strip(), "parsed": parsed,
                                "correct": parsed is not None and f"({parsed})" == q.answer, "error": None})
    predictions.sort(key=lambda p: p["index"])
    return predictions
