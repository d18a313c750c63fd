"""What the tiny encoders see, per property: the mean cosine between the two images of a synthetic scene (which
differ in that property alone) for the tiny CLIP's projected embedding (what MMVP-VLM and mining read) and its
second-to-last patch grid (what the MLLM reads), and the tiny DINO's CLS (what mining reads), patch mean and patch
grid. 1 means blind to the property. 30 held-out scenes a pattern.

    python bench/miniature_features.py
    python bench/miniature_features.py --dino DIR   # another tiny DINO (a pretrain.py folder) beside the shipped CLIP
"""
import argparse

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModel

from mof.data.synthetic import make_pairs
from mof.model.presets import TINY_ENCODERS

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--dino", default=TINY_ENCODERS["dino"], help="a Dinov2Model save_pretrained folder")
folders = {"clip": TINY_ENCODERS["clip"], "dino": parser.parse_args().dino}
res = {}
models = {k: (AutoModel.from_pretrained(f).eval(), AutoImageProcessor.from_pretrained(f)) for k, f in folders.items()}


def cos(x, y):
    x, y = x.flatten(), y.flatten()
    return float(x @ y / (x.norm() * y.norm()))


with torch.no_grad():
    for pattern, items, options in make_pairs(30, 4242, 64, False):
        a, b = items[0][0], items[1][0]
        row = res.setdefault(pattern.name, {})
        m, p = models["dino"]
        oa, ob = [m(pixel_values=p(images=[im], return_tensors="pt")["pixel_values"]) for im in (a, b)]
        row.setdefault("dino_cls", []).append(cos(oa.pooler_output, ob.pooler_output))
        row.setdefault("dino_patch_mean", []).append(cos(oa.last_hidden_state[:, 1:].mean(1), ob.last_hidden_state[:, 1:].mean(1)))
        row.setdefault("dino_patch_grid", []).append(cos(oa.last_hidden_state[:, 1:], ob.last_hidden_state[:, 1:]))
        m, p = models["clip"]
        pa, pb = [p(images=[im], return_tensors="pt")["pixel_values"] for im in (a, b)]
        ea, eb = m.get_image_features(pixel_values=pa), m.get_image_features(pixel_values=pb)
        ea, eb = getattr(ea, "pooler_output", ea), getattr(eb, "pooler_output", eb)
        row.setdefault("clip_embedding", []).append(cos(ea, eb))
        va = m.vision_model(pixel_values=pa, output_hidden_states=True).hidden_states[-2][:, 1:]
        vb = m.vision_model(pixel_values=pb, output_hidden_states=True).hidden_states[-2][:, 1:]
        row.setdefault("clip_patch_grid_2nd_last", []).append(cos(va, vb))
cols = ["clip_embedding", "clip_patch_grid_2nd_last", "dino_cls", "dino_patch_mean", "dino_patch_grid"]
print("| pattern | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for k, row in res.items():
    print(f"| {k} | " + " | ".join(f"{np.mean(row[c]):.3f}" for c in cols) + " |")
