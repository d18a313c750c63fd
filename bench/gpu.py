"""Training throughput of a paper-size MoF model on one GPU through the shipped training step
(`MofLitModule.training_step` in a Lightning `Trainer`): real tokens/s, model FLOPs utilisation, peak memory,
padded vs packed, the loss implementations, and each speed option (mof/model/speed.py) alone and combined:
FlexAttention over packed rows, Liger's kernels, regional torch.compile, fused AdamW, partial checkpointing.

Randomly initialised CLIP ViT-L/14-336 + DINOv2 ViT-L/14 + a 7B Llama (no weights needed), I-MoF (1152 visual
tokens), bf16, SDPA attention, gradient checkpointing, stage-2 shapes (encoders frozen, projectors + LLM trained
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
from mof.model.flops import training_flops
from mof.model.speed import SpeedOptionError, apply_speed, check_speed_options, checkpoint_layers

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 tensor-core FLOP/s

BASE = {"packing": False, "pack_length": None, "loss": "full", "attention": "sdpa", "liger_kernels": False,
        "compile_layers": None, "fused_adamw": False, "checkpoint": True}
FLEX = {"packing": True, "pack_length": 4096, "attention": "flex_attention"}
MODES = {  # name: what differs from BASE; the options that cannot be undone (Liger, compile) come last
    "padded, full loss": {},
    "packed, full loss": {"packing": True},
    "padded, Liger loss": {"loss": "liger"},
    "padded, chunked loss": {"loss": "chunked"},
    "padded, fused AdamW, checkpoint 50% of layers": {"fused_adamw": True, "checkpoint": 0.5},
    "packed rows of 4096, full loss": {"packing": True, "pack_length": 4096},
    "packed rows of 4096, Liger loss": {"packing": True, "pack_length": 4096, "loss": "liger"},
    "packed 4096, FlexAttention": FLEX,
    "packed 4096, FlexAttention, fused AdamW": {**FLEX, "fused_adamw": True},
    "packed 4096, FlexAttention, checkpoint 50% of layers": {**FLEX, "checkpoint": 0.5},
    "packed 4096, FlexAttention, Liger kernels + loss": {**FLEX, "liger_kernels": True, "loss": "liger"},
    "packed 4096, all: Flex, Liger, compiled layers, fused AdamW": {**FLEX, "liger_kernels": True, "loss": "liger",
                                                                      "compile_layers": "inductor", "fused_adamw": True},
}


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
    checkpoint_layers(model, True)
    items = draw_samples(batch * a.steps, config, a.max_length)
    if not a.tiny:  # the paper's 336 px inputs
        for x in items:
            if x["pixel_values"] is not None:
                x["pixel_values"] = [torch.randn(3, s.image_size, s.image_size) for s in config.encoder_specs]
    agreement = loss_agreement(model, items[:batch], device)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    rows = []
    liger_applied = False
    for mode in a.modes:
        o = {**BASE, **MODES[mode]}
        packing, pack_length = o["packing"], o["pack_length"]
        model.config.loss_implementation = o["loss"]
        try:
            check_speed_options(o["attention"], o["liger_kernels"], o["compile_layers"], o["checkpoint"], True, device)
            if o["liger_kernels"] and not liger_applied:
                apply_speed(model, attention=o["attention"], liger_kernels=True, gradient_checkpointing=o["checkpoint"])
                liger_applied = True
            model.model.language_model.set_attn_implementation(o["attention"])
            checkpoint_layers(model, o["checkpoint"])
            for layer in model.model.language_model.layers:
                if o["compile_layers"]:
                    layer.compile(backend=o["compile_layers"])
        except SpeedOptionError as e:
            rows.append([mode, f"not run: {str(e)[:90]}", "", "", "", "", ""])
            continue
        if device == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        data = loader(items, batch, packing, False, pack_length)
        try:
            timer = fit_timed(model, data, a.steps, a.skip, accelerator="gpu" if device == "cuda" else "cpu",
                              fused=o["fused_adamw"])
        except (torch.OutOfMemoryError, ImportError, NotImplementedError) as e:
            rows.append([mode, f"{type(e).__name__}: {str(e).splitlines()[0][:80]}", "", "", "", "", ""])
            continue
        timed = [i for b in data.batch_sampler.batches()[a.skip:a.steps] for i in b]
        lengths = [len(items[i]["input_ids"]) for i in timed]
        images = sum(items[i]["pixel_values"] is not None for i in timed)
        flops = training_flops(model, lengths, images) / timer.seconds
        rows.append([mode, f"{timer.tokens / timer.seconds:.0f}", f"{1 - timer.tokens / timer.positions:.1%}",
                     f"{median(timer.times):.2f}", f"{flops / 1e12:.0f}", f"{flops / peak:.1%}" if peak else "-",
                     f"{torch.cuda.max_memory_allocated() / 1024**3:.1f}" if device == "cuda" else "-"])
        print(rows[-1], flush=True)
    body = table(["mode", "real tokens/s", "padding", "median s/step", "model TFLOP/s", "MFU", "peak GiB"], rows)
    llava_per_gpu = 665_000 / (10 * 3600 * 8)
    record(f"GPU training step ({'tiny, CPU' if a.tiny else 'paper size'}): packing and the loss",
           f"{name}; I-MoF ({config.num_visual_tokens} visual tokens), batch {batch} samples of up to {a.max_length} "
           f"tokens (LLaVA-665K-like mix, random order), {'bf16' if device == 'cuda' else 'fp32'}, SDPA and "
           f"gradient checkpointing of every layer unless the mode says otherwise, AdamW; {a.steps - a.skip} timed steps after {a.skip} of `MofLitModule.training_step` "
           f"per mode\n\n{body}",
           f"Reference: LLaVA-1.5-7B instruction tuning (665K samples in ~10 h on 8 A100s) is {llava_per_gpu:.2f} "
           "samples/s per A100. MFU counts model FLOPs of the real tokens (not padding, not recomputation) against "
           f"the card's dense bf16 peak. Loss of the first batch at the initial weights, each way: {agreement}.")


if __name__ == "__main__":
    main()
