"""The images the encoders are pre-trained on (the captions the tiny CLIP reads: `mof.data.synthetic.caption`)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.synthetic import PRETRAIN_SEED_OFFSET, make_images


def image_pool(scenes_per_pattern: int, seed: int, size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    """`[N, 3, size, size]` uint8 images and their attributes, from the pre-training seed stream (no scene shared
    with the MLLM's training data or the held-out benchmarks)."""
    images, attrs = [], []
    for img, a in make_images(scenes_per_pattern, seed + PRETRAIN_SEED_OFFSET, size):
        images.append(np.asarray(img, dtype=np.uint8))
        attrs.append(a)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), attrs


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 `[N, 3, H, W]` to the encoder's normalised floats."""
    x = images.float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
