"""A POPE-style split of the held-out synthetic images, so the POPE side of the paper's trade-off runs offline:
"Is there a <object> in the image?" once for an object the image shows (yes) and once for one it does not (no),
written in POPE's layout (`coco_pope_random.json` + `images/`) and scored by the POPE code. Only the patterns
whose drawn objects are known by name take part."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ...data.synthetic import BENCHMARK_SEED_OFFSET, make_pairs, write_once
from .pope import POPE

OBJECTS = ("arrow", "line", "circle", "dot", "lamp", "square", "letter")
# what an image of each pattern shows, by the pattern's value (the first object is the one asked about)
SHOWN = {
    "orientation and direction": lambda v: ["arrow", "line"],
    "presence of specific features": lambda v: ["circle"] + (["dot"] if v == "yes" else []),
    "state and condition": lambda v: ["lamp", "circle"],
    "positional and relational context": lambda v: ["square", "circle"],
    "structural and physical characteristics": lambda v: ["line"],
    "text": lambda v: ["letter"],
}
DEFAULTS = {"pairs_per_pattern": 20, "seed": 0, "size": 64}


def write_synthetic_pope(out: Path, pairs_per_pattern: int, seed: int, size: int) -> dict:
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True)
    questions = []
    for pattern, items, _ in make_pairs(pairs_per_pattern, seed + BENCHMARK_SEED_OFFSET, size):
        if pattern.name not in SHOWN:
            continue
        for (img, _, _), value in zip(items, pattern.values):
            name = f"{len(questions) // 2:06d}.png"
            img.save(out / "images" / name)
            shown = SHOWN[pattern.name](value)
            absent = rng.choice([o for o in OBJECTS if o not in shown])
            for obj, label in ((shown[0], "yes"), (absent, "no")):
                questions.append({"question_id": len(questions) + 1, "image": name,
                                  "text": f"Is there {'an' if obj[0] in 'aeiou' else 'a'} {obj} in the image?",
                                  "label": label})
    (out / "coco_pope_random.json").write_text("\n".join(json.dumps(q) for q in questions) + "\n")
    return {"questions": len(questions)}


def synthetic_pope_root(data_dir: str | Path, **options) -> Path:
    """`<data_dir>/synthetic/pope`, generated if missing (options as in `DEFAULTS`)."""
    spec = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None and k in DEFAULTS}}
    out = Path(data_dir) / "synthetic" / "pope"
    return write_once(out, {**spec, "version": 1}, lambda d: write_synthetic_pope(d, **spec))


class SyntheticPOPE(POPE):
    """`benchmark=synthetic_pope`: POPE's scoring over presence questions about the held-out synthetic images."""

    name = "synthetic_pope"

    def __init__(self, section: dict, data_dir=None):
        super().__init__(section, data_dir)
        if not self.section.get("root"):
            root = synthetic_pope_root(data_dir, **dict(self.section.get("synthetic") or {}))
            self.section.update(root=root, image_root=root / "images")
