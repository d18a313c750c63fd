"""Batched, deterministic (greedy) answering of image questions: any benchmark's items in, responses out."""

from __future__ import annotations

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.conversation import IMAGE_PLACEHOLDER, get_template
from ..data.images import ImageError
from .benchmarks.base import Item
from .loading import Loaded


def prompt_ids(loaded: Loaded, template, prompt: str) -> list[int]:
    cfg = loaded.model.config
    return template.encode_prompt([("user", IMAGE_PLACEHOLDER + "\n" + prompt)], loaded.tokenizer, cfg.image_token_id,
                                  cfg.num_visual_tokens)


@torch.no_grad()
def answer(loaded: Loaded, items: list[Item], template_name: str, batch_size: int = 16,
           max_new_tokens: int = 12) -> list[dict]:
    """One prediction per item, in item order: the item's fields, `response`, and `error` (an unreadable image:
    `response` None)."""
    template = get_template(template_name)
    tok, model = loaded.tokenizer, loaded.model
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    responses = {}
    # questions/s, at batch granularity; shown on a terminal only (disable=None), so logs stay clean
    progress = tqdm(total=len(items), unit="q", desc="answering", disable=None, dynamic_ncols=True, leave=False)
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        ready, pixels = [], []
        for item in batch:
            try:
                image = item.image
                pixels.append(loaded.image_processor(image.convert("RGB")) if isinstance(image, Image.Image)
                              else loaded.image_processor.load(image))
                ready.append(item)
            except ImageError as e:
                responses[item.id] = (None, str(e))
        if not ready:
            progress.update(len(batch))
            continue
        ids = [prompt_ids(loaded, template, item.prompt) for item in ready]
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
        for item, text in zip(ready, tok.batch_decode(out[:, length:], skip_special_tokens=True)):
            responses[item.id] = (text.strip(), None)
        progress.update(len(batch))
    progress.close()
    return [{**item.fields, "response": responses[item.id][0], "error": responses[item.id][1]} for item in items]
