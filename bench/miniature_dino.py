"""Tiny DINOs side by side, as mining sees them: for each `save_pretrained` folder, the mean CLS cosine between the
two images of 30 held-out scenes a pattern (which differ in that property alone; 1 is blind), the mean cosine
between different scenes, and `mine.py` (the shipped tiny CLIP, the paper's thresholds) on the study's pool
(`reproduce.py`'s: 720 images, seed 0), scored against its attribute side file; and, over every pair of the pool (no
neighbour limit, `mof.study.mining.pair_breakdown`), the true and false pairs that the CLIP calls the same and how
many of each the DINO calls different.

    python pretrain.py encoder=dino out=/tmp/dino-koleo encoder.masked_patches.weight=1.0 encoder.koleo=0.1
    python bench/miniature_dino.py mof/assets/encoders/tiny-dino /tmp/dino-koleo
    python bench/miniature_dino.py DIR... --pool-seeds 1 2 3 4 5   # mining on fresh pools of the study's size
    python bench/miniature_dino.py DIR... --k 720                  # every pair of a pool searched, no neighbour limit
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, AutoModel

from common import ROOT
from mof.data.synthetic import PROPERTY, make_pairs
from mof.study.mining import differs_in_one_property, pair_breakdown_of, read_attributes, score_pairs, write_pool

PARTS = ("true", "false", "one_content")  # pair_breakdown's
BLIND = ["orientation", "quantity", "position", "presence", "viewpoint"]  # the tiny CLIP's (docs/miniature.md)


def cosines(folder: str) -> tuple[dict, float]:
    model, proc = AutoModel.from_pretrained(folder).eval(), AutoImageProcessor.from_pretrained(folder)
    within, firsts = {}, []
    with torch.no_grad():
        for pattern, items, _ in make_pairs(30, 4242, 64, False):
            x = proc(images=[items[0][0], items[1][0]], return_tensors="pt")["pixel_values"]
            e = F.normalize(model(pixel_values=x).pooler_output, dim=-1)
            within.setdefault(PROPERTY[pattern.name], []).append(float(e[0] @ e[1]))
            firsts.append(e[0])
    f = torch.stack(firsts)
    cross = (f @ f.T)[~torch.eye(len(f), dtype=torch.bool)].mean()
    return {k: sum(v) / len(v) for k, v in within.items()}, float(cross)


def two_patterns(a: dict, b: dict) -> str:
    """A pair of two patterns' images, named by each one's property and value, and whether their drawn colour and
    shape agree (a red circle of the presence pattern and a small red circle of the viewpoint one differ in size
    alone when the first has no dot, as `mof.data.synthetic` draws them)."""
    same = [k for k in ("color", "shape") if k in a and k in b and a[k] == b[k]]
    names = sorted(f"{PROPERTY[x['pattern']]} {x['value']}" for x in (a, b))
    return f"two patterns: {' / '.join(names)}" + (f" (same {' and '.join(same)})" if same else "")


def mine(folder: str, pool: Path, run: Path, k: int | None) -> dict:
    subprocess.run([sys.executable, "mine.py", f"images={pool / 'images'}", f"encoders.dino={Path(folder).resolve()}",
                    f"hydra.run.dir={run}", *([f"k={k}"] if k else [])], cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    scored = score_pairs(run / "pairs.csv", pool)
    attrs = read_attributes(pool)
    import csv

    kinds = Counter()
    for r in csv.DictReader(open(run / "pairs.csv", newline="")):
        a, b = attrs[Path(r["image_a"]).name], attrs[Path(r["image_b"]).name]
        kinds["true" if differs_in_one_property(a, b) else two_patterns(a, b) if a["pattern"] != b["pattern"]
              else "same value, other scene" if a["value"] == b["value"] else "other value, other scene"] += 1
    return {**scored, "kinds": dict(kinds), "breakdown": pair_breakdown_of(run, pool)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dinos", nargs="+", help="Dinov2Model save_pretrained folders")
    p.add_argument("--pool-seeds", nargs="+", type=int, default=[0],
                   help="the pools to mine (40 scenes a pattern each); 0 is the study's, others are fresh")
    p.add_argument("--k", type=int, default=None,
                   help="neighbours searched per image (mine.py's k; default its own, 10); the pool's size: every pair")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pools = {s: write_pool(Path(tmp) / f"pool{s}", 40, s) for s in a.pool_seeds}
        print("| DINO | pool seed | within-pair CLS cosine: " + " / ".join(BLIND) + " | other scenes | mined pairs | "
              "true | precision | the true pairs' properties | the others | every pair the CLIP calls the same: true / false "
              "| of them the DINO calls different: true / false |")
        print("|---" * 11 + "|")
        precision = {}
        for n, folder in enumerate(a.dinos):
            within, cross = cosines(folder)
            for s, pool in pools.items():
                m = mine(folder, pool, Path(tmp) / f"run{n}-{s}", a.k)
                precision.setdefault(folder, []).append(100 * (m["precision"] or 0))
                others = {k: v for k, v in m["kinds"].items() if k != "true"}
                same, both = m["breakdown"]["clip_same"], m["breakdown"]["mined"]
                print(f"| {folder} | {s} | " + " / ".join(f"{within[k]:.3f}" for k in BLIND) + f" | {cross:.3f} | "
                      f"{m['pairs']} | {m['true_pairs']} | {precision[folder][-1]:.1f}% | "
                      f"{m['properties']} | {others} | {' / '.join(str(same[k]) for k in PARTS)} | "
                      f"{' / '.join(str(both[k]) for k in PARTS)} |")
        if len(pools) > 1:
            for folder, values in precision.items():
                t = torch.tensor(values)
                print(f"{folder}: precision over pools {a.pool_seeds}: {t.mean():.1f} ± {t.std():.1f}%")


if __name__ == "__main__":
    main()
