"""Dynamic padding of a list of samples into a batch; skipped samples are dropped and counted."""

from __future__ import annotations

from collections import Counter

import torch

from .conversation import IGNORE_INDEX


class Collator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

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
            ids[row, :n] = x["input_ids"]
            labels[row, :n] = x["labels"]
            mask[row, :n] = 1
        batch.update(input_ids=ids, labels=labels, attention_mask=mask)
        with_image = [x["pixel_values"] for x in good if x.get("pixel_values") is not None]
        if with_image:
            batch["pixel_values"] = [torch.stack(per_encoder) for per_encoder in zip(*with_image)]
        return batch
