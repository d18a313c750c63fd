"""Mining's embedding rate: images/s through both encoders of the shipped step (`EmbedModule.predict_step`),
pixels ready (decoding and resizing, which data workers do, not counted), randomly initialised models from configs.

    python bench/mining_embed.py            # CLIP ViT-L/14 + DINOv2 ViT-L/14 at 224 px (on a GPU: bf16)
    python bench/mining_embed.py --tiny     # the tiny pre-trained encoders of `encoders=tiny` (CPU)
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import median, record, table

from mof.mining.embed import EmbedModule
from mof.mining.embedders import Embedder
from mof.model.presets import TINY_ENCODERS


def large_encoders(folder: str) -> dict[str, str]:
    from transformers import BitImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, Dinov2Config, Dinov2Model

    vit_l = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
                 image_size=224)
    clip = CLIPModel(CLIPConfig(vision_config=vit_l, projection_dim=768, text_config=dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2)))
    clip.save_pretrained(f"{folder}/clip")
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(f"{folder}/clip")
    dino = Dinov2Model(Dinov2Config(**vit_l))
    dino.save_pretrained(f"{folder}/dino")
    BitImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(f"{folder}/dino")
    return {"clip": f"{folder}/clip", "dino": f"{folder}/dino"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    folder = tempfile.mkdtemp()
    refs = dict(TINY_ENCODERS) if a.tiny else large_encoders(folder)
    batch = a.batch or (64 if a.tiny else 256)
    embedders = {k: Embedder(r) for k, r in refs.items()}
    module = EmbedModule(embedders, batch_size=batch).to(device)
    if device == "cuda":
        module = module.to(torch.bfloat16)
    size = embedders["clip"].model.config.vision_config.image_size
    item = {"shard": 0, "ids": [], "hashes": [], "skipped": {},
            "pixels": {k: torch.randn(batch, 3, size, size, device=device) for k in refs}}
    times = []
    for step in range(a.steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        module.predict_step(item)
        if device == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
    rate = batch / median(times)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    laion = 120e6
    body = table(["encoders", "device", "batch", "images/s (both encoders)", "GPU-hours for 120M images"],
                 [["tiny pre-trained (64 px)" if a.tiny else "CLIP ViT-L/14 + DINOv2 ViT-L/14, 224 px", name, batch, f"{rate:.0f}",
                   f"{laion / rate / 3600:.1f}" if device == "cuda" else "-"]])
    record("Mining: embedding rate of the shipped predict step", f"{a.steps} timed steps, {'bf16' if device == 'cuda' else 'fp32'}, "
           f"pixels ready\n\n{body}")


if __name__ == "__main__":
    main()
