"""Training throughput of a paper-size MoF model on one GPU: tokens/s, model FLOPs utilisation, peak memory.

Randomly initialised CLIP ViT-L/14-336 + DINOv2 ViT-L/14 + a 7B Llama (no weights needed), bf16,
SDPA attention, gradient checkpointing, stage-2 shapes (sequences of --seq tokens, encoders frozen,
adapters + LLM trained), for fusion none, additive and interleaved.

    python bench/gpu.py                      # on a GPU
    python bench/gpu.py --tiny --steps 2     # the same code on CPU with a small config (tests)
"""

from __future__ import annotations

import argparse
import time

import torch
from common import median, record, table

from mof import MofForConditionalGeneration, paper_config, tiny_config

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 tensor-core FLOP/s


def model_flops_per_step(model, batch: int, seq: int) -> float:
    """Analytic training FLOPs of one step: 6 N per token for the trained LLM and adapters (plus attention,
    12 L h s per token), 2 N per visual token for the frozen encoders' forward. Recomputation from gradient
    checkpointing is not counted (model FLOPs, not hardware FLOPs)."""
    cfg = model.config.text_config
    n_llm = sum(p.numel() for p in model.language_model.parameters())
    n_adapter = sum(p.numel() for p in model.fusion.parameters())
    tokens = batch * seq
    llm = 6 * n_llm * tokens + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq * tokens
    adapters = 6 * n_adapter * batch * model.config.encoder_specs[0].num_tokens
    vision = sum(2 * sum(p.numel() for p in enc.parameters()) * (enc.spec.num_tokens + enc.num_prefix_tokens) * batch
                 for enc in model.vision_encoders)
    return llm + adapters + vision


def run(fusion: str, tiny: bool, batch: int, seq: int, steps: int, device: str) -> dict:
    torch.manual_seed(0)
    if tiny:
        config = tiny_config(fusion=fusion, vocab_size=544)
    else:
        config = paper_config(fusion=fusion)
    config.text_config._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = MofForConditionalGeneration(config).to(dtype)
    model.vision_encoders.requires_grad_(False)
    model.gradient_checkpointing_enable()
    model.train()
    nv = config.num_visual_tokens
    if nv >= seq:
        raise ValueError(f"--seq {seq} leaves no room for text after {nv} visual tokens")
    ids = torch.randint(10, 500, (batch, seq), device=device)
    ids[:, 1:1 + nv] = config.image_token_id
    labels = ids.masked_fill(ids == config.image_token_id, -100)
    pixels = [torch.randn(batch, 3, s.image_size, s.image_size, device=device, dtype=dtype) for s in config.encoder_specs]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, foreach=False)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    t = median(times)
    flops = model_flops_per_step(model, batch, seq)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {"fusion": fusion, "visual_tokens": nv, "step_s": t, "tokens_per_s": batch * seq / t,
            "samples_per_s": batch / t, "tflops": flops / t / 1e12, "mfu": flops / t / peak if peak else None,
            "peak_gib": torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else None}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true", help="small config on CPU (to test the script)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq", type=int, default=None)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--fusions", nargs="*", default=["none", "additive", "interleaved"])
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    batch = a.batch or (2 if a.tiny else 4)
    seq = a.seq or (256 if a.tiny else 2048)
    rows, results = [], []
    for fusion in a.fusions:
        r = run(fusion, a.tiny, batch, seq, a.steps, device)
        results.append(r)
        rows.append([fusion, r["visual_tokens"], f"{r['step_s']:.3f}", f"{r['tokens_per_s']:.0f}", f"{r['tflops']:.1f}",
                     f"{r['mfu']:.1%}" if r["mfu"] is not None else "-",
                     f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"])
    body = table(["fusion", "visual tokens", "step (s)", "tokens/s", "model TFLOP/s", "MFU", "peak GiB"], rows)
    llava_per_gpu = 665_000 / (10 * 3600 * 8)
    note = (f"Reference: LLaVA-1.5-7B instruction tuning (665K samples in ~10 h on 8 A100s) is {llava_per_gpu:.2f} "
            f"samples/s per A100, at LLaVA's own (mostly shorter than {seq}-token) sample lengths.")
    record(f"GPU training throughput ({'tiny, CPU' if a.tiny else 'paper size'})",
           f"batch {batch} x {seq} tokens, bf16={device == 'cuda'}, SDPA, gradient checkpointing, {a.steps} steps\n\n{body}",
           note)
    return results


if __name__ == "__main__":
    main()
