"""Training throughput of a paper-size MoF model on one GPU through the shipped training step
(`MofLitModule.training_step` in a Lightning `Trainer`): real tokens/s, model FLOPs utilisation, peak memory,
padded vs packed and full vs chunked vs Liger loss.

Randomly initialised CLIP ViT-L/14-336 + DINOv2 ViT-L/14 + a 7B Llama (no weights needed), I-MoF (1152 visual
tokens), bf16, SDPA attention, gradient checkpointing, stage-2 shapes (encoders frozen, adapters + LLM trained
with AdamW, samples of up to 2048 tokens drawn from the LLaVA-665K-like mix of `bench/packing.py`).

    python bench/gpu.py                          # on a GPU
    python bench/gpu.py --tiny --steps 3         # the same code on CPU with a small config (tests)
"""

from __future__ import annotations

import argparse
import gc

import torch
from common import fit_timed, median, record, table
from packing import draw_samples, loader

from mof import MofForConditionalGeneration, paper_config, tiny_config

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 tensor-core FLOP/s

# name: (packing, pack_length, loss_implementation)
MODES = {
    "padded, full loss": (False, None, "full"),
    "packed, full loss": (True, None, "full"),
    "padded, Liger loss": (False, None, "liger"),
    "padded, chunked loss": (False, None, "chunked"),
    "packed rows of 4096, full loss": (True, 4096, "full"),
    "packed rows of 4096, Liger loss": (True, 4096, "liger"),
}


def model_flops(model, lengths: list[int], images: int) -> float:
    """Model FLOPs of one training step over samples of `lengths` real tokens: 6 N per token for the trained LLM
    and adapters plus causal-attention 12 L h s per token of a sample of s tokens, and 2 N per token for the
    frozen encoders' forward. Padding and recomputation are not model FLOPs."""
    cfg = model.config.text_config
    n_llm = sum(p.numel() for m in (model.language_model, model.lm_head) for p in m.parameters())
    n_adapter = sum(p.numel() for p in model.fusion.parameters())
    llm = sum(6 * n_llm * s + 12 * cfg.num_hidden_layers * cfg.hidden_size * s * s for s in lengths)
    adapters = 6 * n_adapter * images * model.config.encoder_specs[0].num_tokens
    vision = sum(2 * sum(p.numel() for p in enc.parameters()) * (enc.spec.num_tokens + enc.num_prefix_tokens) * images
                 for enc in model.vision_encoders)
    return llm + adapters + vision


def loss_agreement(model, items, device) -> str:
    """The same batch's loss padded and packed, with each loss implementation that is installed."""
    from mof.data.collate import Collator

    out = []
    with torch.no_grad():
        for packing in (False, True):
            batch = {k: v.to(device) if torch.is_tensor(v) else [t.to(device) for t in v] if k == "pixel_values" else v
                     for k, v in Collator(0, packing)(items).items()}
            for loss in ("full", "chunked", "liger"):
                model.config.loss_implementation = loss
                try:
                    value = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                  position_ids=batch.get("position_ids"), pixel_values=batch.get("pixel_values"),
                                  labels=batch["labels"]).loss
                    out.append(f"{'packed' if packing else 'padded'} {loss} {value.item():.5f}")
                except ImportError:
                    pass
    return ", ".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true", help="small config on CPU (to test the script)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--skip", type=int, default=2)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    batch = a.batch or (4 if a.tiny else 16)
    torch.manual_seed(0)
    config = tiny_config(fusion="interleaved", vocab_size=544) if a.tiny else paper_config(fusion="interleaved")
    config.text_config._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = MofForConditionalGeneration(config).to(dtype)
    model.vision_encoders.requires_grad_(False)
    model.gradient_checkpointing_enable()
    items = draw_samples(batch * a.steps, config, a.max_length)
    if not a.tiny:  # the paper's 336 px inputs
        for x in items:
            if x["pixel_values"] is not None:
                x["pixel_values"] = [torch.randn(3, s.image_size, s.image_size) for s in config.encoder_specs]
    agreement = loss_agreement(model, items[:batch], device)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    rows = []
    for mode in a.modes:
        packing, pack_length, loss = MODES[mode]
        model.config.loss_implementation = loss
        if device == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        data = loader(items, batch, packing, False, pack_length)
        try:
            timer = fit_timed(model, data, a.steps, a.skip, accelerator="gpu" if device == "cuda" else "cpu")
        except (torch.OutOfMemoryError, ImportError) as e:
            rows.append([mode, f"{type(e).__name__}: {str(e).splitlines()[0][:80]}", "", "", "", "", ""])
            continue
        timed = [i for b in data.batch_sampler.batches()[a.skip:a.steps] for i in b]
        lengths = [len(items[i]["input_ids"]) for i in timed]
        images = sum(items[i]["pixel_values"] is not None for i in timed)
        flops = model_flops(model, lengths, images) / timer.seconds
        rows.append([mode, f"{timer.tokens / timer.seconds:.0f}", f"{1 - timer.tokens / timer.positions:.1%}",
                     f"{median(timer.times):.2f}", f"{flops / 1e12:.0f}", f"{flops / peak:.1%}" if peak else "-",
                     f"{torch.cuda.max_memory_allocated() / 1024**3:.1f}" if device == "cuda" else "-"])
        print(rows[-1], flush=True)
    body = table(["mode", "real tokens/s", "padding", "median s/step", "model TFLOP/s", "MFU", "peak GiB"], rows)
    llava_per_gpu = 665_000 / (10 * 3600 * 8)
    record(f"GPU training step ({'tiny, CPU' if a.tiny else 'paper size'}): packing and the loss",
           f"{name}; I-MoF ({config.num_visual_tokens} visual tokens), batch {batch} samples of up to {a.max_length} "
           f"tokens (LLaVA-665K-like mix, random order), {'bf16' if device == 'cuda' else 'fp32'}, SDPA, gradient "
           f"checkpointing, AdamW; {a.steps - a.skip} timed steps after {a.skip} of `MofLitModule.training_step` "
           f"per mode\n\n{body}",
           f"Reference: LLaVA-1.5-7B instruction tuning (665K samples in ~10 h on 8 A100s) is {llava_per_gpu:.2f} "
           "samples/s per A100. MFU counts model FLOPs of the real tokens (not padding, not recomputation) against "
           f"the card's dense bf16 peak. Loss of the first batch at the initial weights, each way: {agreement}.")


if __name__ == "__main__":
    main()
