"""The mining side of the miniature: a fresh pool of synthetic images with their true attributes in a side file
(read only to *score* the mining), the precision of the mined pairs, and an MMVP-style benchmark written from the
attributes of the pairs that really differ in one property."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from ..data.synthetic import MINING_SEED_OFFSET, PATTERNS, PROPERTY, make_images, write_once
from ..evaluation.benchmarks.mmvp import write_mmvp

ATTRIBUTES = "attributes.jsonl"


def write_pool(out: Path, scenes_per_pattern: int, seed: int, size: int = 64) -> Path:
    """`out/images/NNNNNN.png` and `out/attributes.jsonl` (`{"image", "scene", "pattern", "value", ...}`)."""
    def write(d: Path) -> dict:
        (d / "images").mkdir(parents=True)
        with open(d / ATTRIBUTES, "w") as f:
            for n, (img, attrs) in enumerate(make_images(scenes_per_pattern, seed + MINING_SEED_OFFSET, size)):
                img.save(d / "images" / f"{n:06d}.png")
                f.write(json.dumps({"image": f"{n:06d}.png", "scene": n // 2, **attrs}) + "\n")
        return {"images": n + 1}
    return write_once(out, {"scenes_per_pattern": scenes_per_pattern, "seed": seed, "size": size, "version": 1}, write)


def encoder_refs(encoders) -> dict[str, str]:
    """`{clip, dino}`: `tiny`, a hub id, or a folder (made absolute: the steps run from the checkout), as mine.py and
    train.py take them."""
    return {kind: str(Path(str(encoders[kind])).resolve()) if Path(str(encoders[kind])).exists() else str(encoders[kind])
            for kind in ("clip", "dino")}


def mine_args(images: Path, run: Path, encoders: dict, mining) -> list[str]:
    """`mine.py` on `images` with the study's encoders (`encoder_refs`) and its `mining` thresholds, into `run`.
    `mining['k']` `all`: every image of the pool among each image's neighbours, so that every pair is searched."""
    k = sum(1 for _ in images.iterdir()) if mining["k"] == "all" else mining["k"]
    return ["mine.py", f"images={images}", *(f"encoders.{kind}={ref}" for kind, ref in encoders.items()),
            f"hydra.run.dir={run}", f"clip_threshold={mining['clip_threshold']}",
            f"dino_threshold={mining['dino_threshold']}", f"k={k}"]


def read_attributes(pool: Path) -> dict[str, dict]:
    return {a["image"]: a for a in map(json.loads, (pool / ATTRIBUTES).read_text().splitlines())}


def differs_in_one_property(a: dict, b: dict) -> bool:
    """Same pattern, another value of its property, every other drawn attribute equal (a different scene's
    background tint and position jitter are nuisance, as two photos of one kind of object differ)."""
    keys = (set(a) | set(b)) - {"image", "scene", "value"}
    return a["pattern"] == b["pattern"] and a["value"] != b["value"] and all(a.get(k) == b.get(k) for k in keys)


def _content_codes(attrs: list[dict]) -> tuple:
    """Per image, an integer for its content (pattern, value and drawn attributes: what `differs_in_one_property`
    compares) and one for its content less the value; two images of equal codes differ in nuisance alone."""
    import numpy as np

    def code(key):
        seen: dict = {}
        return np.array([seen.setdefault(key(a), len(seen)) for a in attrs])
    rest = lambda a: tuple(sorted((k, v) for k, v in a.items() if k not in ("image", "scene", "value")))
    return code(lambda a: (rest(a), a["value"])), code(rest)


def _unit(x):
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pair_breakdown(clip, dino, attrs: list[dict], clip_threshold: float, dino_threshold: float,
                   block: int = 1024) -> dict:
    """Where mining's precision goes, over every pair of the pool (no neighbour limit): the pairs that the CLIP calls
    the same (cosine above `clip_threshold`), and of those the ones the DINO calls different too (cosine below
    `dino_threshold`), which the thresholds mine; each counted as true (one property apart; by property), false
    (two patterns, or two properties apart) or of one content (nuisance apart: another scene's tint and position).
    `precision` is the true pairs' share of all. `clip`, `dino` `[N, D]` rows in the order of `attrs`; `block` rows
    of cosines in memory at a time."""
    import numpy as np

    x, y = _unit(clip), _unit(dino)
    content, family = _content_codes(attrs)
    prop = np.array([PROPERTY[a["pattern"]] for a in attrs])
    out = {k: {"true": Counter(), "false": 0, "one_content": 0} for k in ("clip_same", "mined")}
    for start in range(0, len(x), block):
        # each pair once: a block's rows against themselves and the rows after them, never the ones before
        rows, cols = np.nonzero(x[start:start + block] @ x[start:].T > clip_threshold)
        rows, cols = rows + start, cols + start
        rows, cols = rows[cols > rows], cols[cols > rows]
        mined = np.einsum("ij,ij->i", y[rows], y[cols]) < dino_threshold
        same = content[rows] == content[cols]
        for key, sel in (("clip_same", np.ones(len(rows), bool)), ("mined", mined)):
            true = sel & ~same & (family[rows] == family[cols])
            out[key]["true"].update(prop[rows[true]].tolist())
            out[key]["false"] += int((sel & ~same).sum() - true.sum())
            out[key]["one_content"] += int((sel & same).sum())
    for v in out.values():
        v["true"] = dict(v["true"].most_common())
        n = sum(v["true"].values())
        total = n + v["false"] + v["one_content"]
        v["precision"] = n / total if total else None
    return out


def pair_breakdown_of(run: Path, pool: Path) -> dict:
    """`pair_breakdown` of a finished `mine.py` run on `pool` (its embeddings and thresholds)."""
    ran = json.loads((run / "summary.json").read_text())
    attrs, clip, dino = _embedded(run / "embeddings", ran["shards"], pool)
    return pair_breakdown(clip[:], dino[:], attrs, ran["clip_threshold"], ran["dino_threshold"])


def score_pairs(pairs_csv: Path, pool: Path) -> dict:
    """Precision of the mined pairs against the side file, and the properties the true pairs differ in."""
    attrs = read_attributes(pool)
    with open(pairs_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    pairs = [(attrs[Path(r["image_a"]).name], attrs[Path(r["image_b"]).name]) for r in rows]
    true = [(a, b) for a, b in pairs if differs_in_one_property(a, b)]
    return {"pairs": len(pairs), "true_pairs": len(true), "precision": len(true) / len(pairs) if pairs else None,
            "same_scene": sum(a["scene"] == b["scene"] for a, b in pairs),
            "properties": dict(Counter(PROPERTY[a["pattern"]] for a, _ in true).most_common()),
            "all_pairs_by_pattern": dict(Counter(PROPERTY[a["pattern"]] if a["pattern"] == b["pattern"] else "mixed"
                                                 for a, b in pairs).most_common())}


def write_mined_benchmark(out: Path, pairs_csv: Path, pool: Path, max_pairs_per_pattern: int) -> dict:
    """MMVP's layout (with a Pattern column) from the mined pairs that differ in one property: each pair gets its
    pattern's question, both images the same options and opposite answers, as MMVP's authors wrote them by hand."""
    from PIL import Image

    attrs = read_attributes(pool)
    by_name = {p.name: p for p in PATTERNS}
    with open(pairs_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    used, taken, out_rows, images = set(), Counter(), [], []
    for r in rows:
        a, b = attrs[Path(r["image_a"]).name], attrs[Path(r["image_b"]).name]
        if not differs_in_one_property(a, b) or {a["image"], b["image"]} & used or taken[a["pattern"]] >= max_pairs_per_pattern:
            continue
        used |= {a["image"], b["image"]}
        taken[a["pattern"]] += 1
        p = by_name[a["pattern"]]
        for x in (a, b):
            letter = "(a)" if x["value"] == p.values[0] else "(b)"
            out_rows.append({"Question": p.question, "Options": f"(a) {p.options[0]} (b) {p.options[1]}",
                             "Correct Answer": letter, "Pattern": p.name})
            images.append(Image.open(pool / "images" / x["image"]))
    return {**write_mmvp(out, out_rows, images), "per_pattern": dict(taken)}


def _embedded(embeddings: Path, n_shards: int, pool: Path) -> tuple:
    """The mining run's embeddings, read back: `(attributes by row, clip [N, D], dino [N, D])`."""
    import numpy as np

    from ..mining.embed import Embedded

    embedded = Embedded(embeddings, n_shards)
    attrs = read_attributes(pool)
    rows = [attrs[Path(i).name] for i in embedded.ids(np.arange(len(embedded)))]
    return rows, embedded.clip, embedded.dino


def scene_cosines(embeddings: Path, n_shards: int, pool: Path) -> dict:
    """Per property, the mean cosine of CLIP's and of DINO's embeddings between the two images of a scene (which
    differ in that property alone): what each encoder sees, and so which pairs the thresholds can find."""
    import numpy as np

    attrs, clip, dino = _embedded(embeddings, n_shards, pool)
    by_scene: dict[int, list[int]] = {}
    for row, a in enumerate(attrs):
        by_scene.setdefault(a["scene"], []).append(row)
    out: dict[str, dict] = {}
    for rows in by_scene.values():
        if len(rows) != 2:
            continue
        a, b = rows
        prop = PROPERTY[attrs[a]["pattern"]]
        for kind, m in (("clip", clip), ("dino", dino)):
            x, y = m[a], m[b]
            cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
            out.setdefault(prop, {}).setdefault(kind, []).append(cos)
    return {p: {k: round(float(np.mean(v)), 4) for k, v in kinds.items()} for p, kinds in out.items()}
