"""Dynamic padding of a list of samples into a batch; skipped samples are dropped and counted."""

from __future__ import annotations

from collections import Counter

import torch

from .conversation import IGNORE_INDEX


class Collator:
    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def __call__(self, items: list[dict]) -> dict:
        good = [x for x in items if "skip" not in x]
        skipped = Counter(x["skip"] for x in items if "skip" in x)
        batch = {"skipped": dict(skipped), "num_samples": len(good),
                 "truncated": sum(bool(x.get("truncated")) for x in good)}
        if not good:
            return batch
        length = max(len(x["input_ids"]) for x in good)
        ids = torch.full((len(good), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(good), length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(good), length), dtype=torch.long)
        for row, x in enumerate(good):
            n = len(x["input_ids"])
            span = slice(length - n, length) if self.padding_side == "left" else slice(0, n)
            ids[row, span] = x["input_ids"]
            labels[row, span] = x["labels"]
            mask[row, span] = 1
        batch.update(input_ids=ids, labels=labels, attention_mask=mask)
        with_image = [x["pixel_values"] for x in good if x.get("pixel_values") is not None]
        if with_image:
            batch["pixel_values"] = [torch.stack(per_encoder) for per_encoder in zip(*with_image)]
        return batch
