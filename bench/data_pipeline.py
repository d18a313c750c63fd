"""Data pipeline throughput: decoding, padding, two encoders' preprocessing and tokenisation.

mof's dataset + collator against a plain per-sample baseline (each encoder decodes and transforms
the image on its own; the rendered prompt is tokenised as one string), and the check that the
default number of workers keeps the tiny default training run fed.

    python bench/data_pipeline.py [--samples 400]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import median, record, table, tiny_setup
from PIL import Image

from mof import MofForConditionalGeneration
from mof.data.collate import Collator


def baseline_sample(record_, root, tok, specs):
    pixels = []
    for spec in specs:  # every encoder opens, converts, pads and resizes on its own
        img = Image.open(root / record_["image"]).convert("RGB")
        w, h = img.size
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), tuple(int(m * 255) for m in spec.image_mean))
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        arr = np.asarray(canvas.resize((spec.image_size, spec.image_size), Image.BICUBIC), dtype=np.float32) / 255
        pixels.append(torch.from_numpy(((arr - spec.image_mean) / spec.image_std).transpose(2, 0, 1).copy()))
    text = " ".join(t["value"] for t in record_["conversations"])
    ids = tok(text)["input_ids"]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(ids), "pixel_values": pixels}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    config, dm, data = tiny_setup(30)
    tok = dm.tokenizer
    n = min(a.samples, len(dm.dataset))
    collate = Collator(tok.pad_token_id)
    records = [r for r, _ in dm.dataset.records[:n]]
    root = data / "images"

    def ours():
        for s in range(0, n, 16):
            collate([dm.dataset[i] for i in range(s, min(n, s + 16))])

    def baseline():
        for s in range(0, n, 16):
            collate([baseline_sample(r, root, tok, config.encoder_specs) for r in records[s:s + 16]])

    times = {"ours": [], "baseline": []}
    for _ in range(a.rounds):
        for name, fn in (("ours", ours), ("baseline", baseline)):
            t0 = time.perf_counter()
            fn()
            times[name].append(n / (time.perf_counter() - t0))
    ours_sps, base_sps = median(times["ours"]), median(times["baseline"])

    # Does one worker (the default) keep the default training step fed?
    torch.manual_seed(0)
    model = MofForConditionalGeneration(config).train()
    model.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = collate([dm.dataset[i] for i in range(16)])
    step_times = []
    for i in range(12):
        t0 = time.perf_counter()
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"],
              labels=batch["labels"]).loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= 2:
            step_times.append(time.perf_counter() - t0)
    train_sps = 16 / median(step_times)
    body = table(["pipeline", "median samples/s (1 process)", "ratio"],
                 [["plain per-sample baseline", f"{base_sps:.0f}", "1.00"], ["mof dataset + collator", f"{ours_sps:.0f}",
                                                                            f"{ours_sps / base_sps:.2f}"]])
    verdict = "keeps up" if ours_sps >= train_sps else "starves the training step"
    body += (f"\n\nTiny default training consumes {train_sps:.0f} samples/s (batch 16); one data worker "
             f"(the default, `data.num_workers=1`) produces ~{ours_sps:.0f} samples/s: it {verdict} "
             f"({ours_sps / train_sps:.1f}x headroom).")
    record("Data pipeline: decode + pad + two encoders + tokenise", f"{n} samples, {a.rounds} alternating rounds\n\n{body}")


if __name__ == "__main__":
    main()
