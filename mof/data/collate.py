"""Samples into a batch: padded (one row per sample) or packed (several samples per row); skipped samples are
dropped and counted."""

from __future__ import annotations

from collections import Counter

import torch

from .conversation import IGNORE_INDEX


class Collator:
    """Args:
        pad_token_id: fills the rows after their last token.
        packing: False pads one sample per row. True packs the batch's samples into rows (first fit, longest
            first) of at most `pack_length` tokens, or of the batch's longest sample when `pack_length` is None:
            then a row never costs more than a padded one, whatever the attention kernel. Each sample keeps its own
            position ids from 0, which is how the LLM's attention knows where a sample ends (a block-diagonal
            causal mask with SDPA/eager, variable-length kernels with flash attention), and no sample's label
            is predicted from another's.
    """

    def __init__(self, pad_token_id: int, packing: bool = False, pack_length: int | None = None):
        self.pad_token_id = pad_token_id
        self.packing = packing
        self.pack_length = pack_length

    def __call__(self, items: list[dict]) -> dict:
        good = [x for x in items if "skip" not in x]
        skipped = Counter(x["skip"] for x in items if "skip" in x)
        batch = {"skipped": dict(skipped), "num_samples": len(good),
                 "truncated": sum(bool(x.get("truncated")) for x in good)}
        if not good:
            return batch
        lengths = [len(x["input_ids"]) for x in good]
        rows = (pack_rows(lengths, self.pack_length or max(lengths)) if self.packing
                else [[i] for i in range(len(good))])
        length = max(sum(len(good[i]["input_ids"]) for i in row) for row in rows)
        ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        positions = torch.zeros((len(rows), length), dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                x, n = good[i], len(good[i]["input_ids"])
                ids[r, start:start + n] = x["input_ids"]
                labels[r, start:start + n] = x["labels"]
                labels[r, start] = IGNORE_INDEX  # never a target: it would be predicted from the previous sample
                positions[r, start:start + n] = torch.arange(n)
                mask[r, start:start + n] = 1
                start += n
            positions[r, start:] = torch.arange(length - start)  # the padding is a sequence of its own
        batch.update(input_ids=ids, labels=labels, num_tokens=int(mask.sum()))
        if self.packing:  # said in the batch; the model refuses a mask with packed positions (`modeling_mof`)
            batch.update(packed=True, position_ids=positions)  # no attention mask: the restarts delimit the samples
        else:
            batch["attention_mask"] = mask
        # Images in the order of their placeholder spans, row by row.
        order = [i for row in rows for i in row]
        with_image = [good[i]["pixel_values"] for i in order if good[i].get("pixel_values") is not None]
        if with_image:
            batch["pixel_values"] = [torch.stack(per_encoder) for per_encoder in zip(*with_image)]
        return batch


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices grouped into rows whose lengths sum to at most `capacity` (a longer
    sample gets a row of its own)."""
    rows, room = [], []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows
