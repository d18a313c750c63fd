"""`encoders.clip=tiny` / `encoders.dino=tiny`: small random CLIP and DINOv2 models built from configs and saved
once under `<data_dir>/tiny_encoders/`, so the mining pipeline runs with nothing to download (tests, CPU demos).
Their cosines mean nothing; the pipeline around them is the real one."""

from __future__ import annotations

from pathlib import Path

import torch

SIZE = 64


def tiny_encoder(kind: str, data_dir: str | Path) -> str:
    from transformers import (BitImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, Dinov2Config,
                              Dinov2Model)

    out = Path(data_dir) / "tiny_encoders" / kind
    if (out / "config.json").is_file():
        return str(out)
    torch.manual_seed(0)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=SIZE,
                  patch_size=8)
    if kind == "clip":
        model = CLIPModel(CLIPConfig(vision_config=vision, projection_dim=32, text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100)))
        processor = CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    else:
        model = Dinov2Model(Dinov2Config(**vision))
        processor = BitImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE},
                                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)
