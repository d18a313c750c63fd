"""Sequence packing vs padding: real (non-padding) tokens/s of the shipped training step and the share of padding,
on a length mix drawn like LLaVA-665K, with the tiny model on CPU (or a GPU if present).

The mix (text tokens per sample, visual tokens added for samples with an image):
  30% short captions / answers  uniform 40-80       (image)
  45% VQA                       uniform 100-300     (image)
  19% multi-turn conversations  log-uniform 300-2000 (image)
   6% text-only (ShareGPT)      log-uniform 200-2000
Samples are cut at --max-length (2048). Random order: batches drawn at random (`data.group_by_modality=false`;
LLaVA's own sampler sorts lengths only within one global batch, which leaves each rank's batch about as mixed).
Length-grouped: the framework's default sampler, which sorts lengths within megabatches of 50 global batches.
Packed rows are as long as the batch's longest sample (the default), or --max-length.

    python bench/packing.py [--steps 12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import math

import torch
from common import fit_timed, median, record, table
from torch.utils.data import DataLoader

from mof import MofForConditionalGeneration, tiny_config
from mof.data.collate import Collator
from mof.data.sampler import ModalityGroupedBatchSampler

MIX = [(0.30, "uniform", 40, 80, True), (0.45, "uniform", 100, 300, True), (0.19, "log", 300, 2000, True),
       (0.06, "log", 200, 2000, False)]


def draw_samples(n: int, config, max_length: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    nv = config.num_visual_tokens
    kinds = torch.multinomial(torch.tensor([m[0] for m in MIX]), n, replacement=True, generator=g).tolist()
    items = []
    for kind in kinds:
        _, law, lo, hi, image = MIX[kind]
        u = torch.rand((), generator=g).item()
        text = int(lo + u * (hi - lo)) if law == "uniform" else int(math.exp(math.log(lo) + u * math.log(hi / lo)))
        text = min(text, max_length - (nv if image else 0))
        ids = torch.randint(4, 500, (text,), generator=g)
        ids[0] = 1
        labels = ids.clone()
        labels[: max(1, int(0.4 * text))] = -100  # the prompt
        if image:
            ids = torch.cat([ids[:1], torch.full((nv,), config.image_token_id), ids[1:]])
            labels = torch.cat([labels[:1], torch.full((nv,), -100), labels[1:]])
        pixels = [torch.randn(3, 64, 64, generator=g)] * len(config.vision_encoders) if image else None
        items.append({"input_ids": ids, "labels": labels, "pixel_values": pixels})
    return items


def loader(items, batch_size: int, packing: bool, grouped: bool, pack_length: int | None) -> DataLoader:
    lengths = [len(x["input_ids"]) * (1 if x["pixel_values"] is not None else -1) for x in items]
    sampler = ModalityGroupedBatchSampler(lengths, batch_size, seed=0, group_by_modality=grouped)
    return DataLoader(items, batch_sampler=sampler, collate_fn=Collator(0, packing, pack_length))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--samples", type=int, default=320, help="one epoch of them per mode: every mode trains on all")
    p.add_argument("--max-length", type=int, default=2048)
    a = p.parse_args()
    torch.manual_seed(0)
    config = tiny_config(vocab_size=544)
    config.text_config._attn_implementation = "sdpa"
    model = MofForConditionalGeneration(config)
    model.requires_grad_(True)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    items = draw_samples(a.samples, config, a.max_length)
    modes = {"padded, random order": (False, False, None),
             "packed, random order": (True, False, None),
             f"packed, random order, rows of {a.max_length}": (True, False, a.max_length),
             "padded, length-grouped": (False, True, None),
             "packed, length-grouped": (True, True, None)}
    steps = math.ceil(a.samples / a.batch)
    fit_timed(model, loader(items[:2 * a.batch], a.batch, True, False, None), 2, skip=0)  # warm-up
    runs = {name: [] for name in modes}
    for _ in range(a.rounds):  # alternate the modes
        for name, (packing, grouped, pack_length) in modes.items():
            model.load_state_dict(initial)
            runs[name].append(fit_timed(model, loader(items, a.batch, packing, grouped, pack_length), steps, skip=0))
    base = median([t.tokens / t.seconds for t in runs["padded, random order"]])
    rows = []
    for name, timers in runs.items():
        rate = median([t.tokens / t.seconds for t in timers])
        padding = 1 - timers[0].tokens / timers[0].positions
        rows.append([name, f"{rate:.0f}", f"{padding:.1%}", f"{median([t.seconds / len(t.times) for t in timers]):.3f}",
                     f"{rate / base:.2f}"])
    lengths = torch.tensor([len(x["input_ids"]) for x in items], dtype=torch.float)
    body = table(["mode", "real tokens/s", "padding", "s/step", "ratio to padded, random order"], rows)
    record("Sequence packing vs padding (tiny model, LLaVA-665K-like lengths)",
           f"tiny interleaved model ({config.num_visual_tokens} visual tokens), batch {a.batch} samples, packed rows as long "
           f"as the batch's longest sample unless stated, one epoch of {a.samples} samples ({steps} steps of "
           f"`MofLitModule.training_step`, all timed, after a warm-up run) per mode, {a.rounds} alternating rounds; sample lengths: median {lengths.median():.0f}, "
           f"mean {lengths.mean():.0f}, max {lengths.max():.0f} (mix in `bench/packing.py`)\n\n{body}",
           "Target: packed >= 1.5x padded real tokens/s.")


if __name__ == "__main__":
    main()
