"""MMVP-VLM: the nine patterns posed to CLIP-like models directly.

Layout: `Questions.csv` with three columns (question id, type, statement) and images under
`MMVP_VLM_Images/<type>/<id>.jpg` (or `MLLM_VLM Images/`, as the original script reads). Consecutive
rows form a pair; the statement of the odd id belongs to the pair's first image. Each text
("a photo of " + statement) must pick its own image of the pair by image-text similarity; a pair
counts if both do. Any HF dual encoder (`CLIPModel`, `SiglipModel`) works, with its own processor.

Fidelity with the original `scripts/evaluate_vlm.py` (OpenAI's `clip` package):
- `benchmark.preprocess=openai` prepares images as OpenAI's `clip.load` transform does, pixel for pixel (bicubic
  resize of the short side, the long side truncated; centre crop whose offset is rounded half to even, as
  torchvision's `CenterCrop`; RGB; CLIP's mean and std), equal to the last bit to torchvision running OpenAI's
  `_transform` (tests/fixtures/openai_transform_reference.npz). `hf` (the default) uses the checkpoint's own processor,
  whose crop offset is rounded down: one pixel apart on images whose resized long side exceeds the crop by an odd
  number. `openai` is for CLIP models (it uses CLIP's mean and std).
- A statement equally similar to both images: the original picks image 2 (`ties=original`); `mof` (`ties=none`,
  the default) counts it as picking neither, so a pair with a tie is wrong whichever image it belongs to.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...data.images import ImageError, load_image
from ...model.weights import refused_pickles, require_available
from .base import Benchmark, BenchmarkFormatError, csv_records, find_layout
from ...data.patterns import PATTERNS, canonical_pattern
from ..report import print_summary, write_report

IMAGE_DIRS = ("MMVP_VLM_Images", "MLLM_VLM Images")
LAYOUT = ("expected:\n  DIR/Questions.csv   (columns: question id, type, statement)\n"
          "  DIR/MMVP_VLM_Images/<type>/<id>.jpg\n"
          "MMVP-VLM is published on the Hugging Face hub as the dataset MMVP/MMVP_VLM.")


def load_vlm_questions(root: Path) -> tuple[list[dict], Path]:
    csv_path, image_dir = find_layout(root, "MMVP-VLM", IMAGE_DIRS, LAYOUT)
    header, records = csv_records(csv_path, "3 columns (question id, type, statement)")
    if len(header) != 3:
        raise BenchmarkFormatError(f"{csv_path}: expected 3 columns (question id, type, statement), found {header}")
    out = []
    for line, row in records:
        qid, kind, statement = row.values()
        if not qid.isdigit():
            raise BenchmarkFormatError(f"{csv_path}:{line}: question id {qid!r} is not a number")
        out.append({"id": int(qid), "type": kind, "statement": statement})
    if len(out) % 2:  # statements come in pairs, one per image: a last one alone would be dropped
        raise BenchmarkFormatError(f"{csv_path}: {len(out)} statements; expected pairs (an even number)")
    return out, image_dir


def _load_model(checkpoint: str, device):
    from transformers import AutoModel, AutoProcessor, AutoTokenizer

    require_available(checkpoint)
    with refused_pickles(checkpoint):
        model = AutoModel.from_pretrained(checkpoint).to(device).eval()
    try:
        processor = AutoProcessor.from_pretrained(checkpoint)
        return model, processor.tokenizer, processor.image_processor
    except (OSError, ValueError, TypeError, AttributeError):
        from transformers import AutoImageProcessor

        return model, AutoTokenizer.from_pretrained(checkpoint), AutoImageProcessor.from_pretrained(checkpoint)


OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # OpenAI's clip/clip.py `_transform`
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESS = ("hf", "openai")
TIES = ("none", "original")


def openai_transform(image: Image.Image, n_px: int) -> torch.Tensor:
    """`[3, n_px, n_px]`: OpenAI's CLIP preprocessing (torchvision's `Resize(n_px, BICUBIC)`, `CenterCrop(n_px)`,
    RGB, `ToTensor`, `Normalize`) restated with PIL, since mof does not depend on torchvision."""
    w, h = image.size
    long = int(n_px * max(w, h) / min(w, h))                  # torchvision truncates the long side
    image = image.resize((n_px, long) if w <= h else (long, n_px), Image.BICUBIC)
    w, h = image.size
    top, left = round((h - n_px) / 2), round((w - n_px) / 2)  # round(): half to even, as torchvision's CenterCrop
    image = image.crop((left, top, left + n_px, top + n_px)).convert("RGB")
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(OPENAI_CLIP_MEAN)[:, None, None]) / torch.tensor(OPENAI_CLIP_STD)[:, None, None]


def statement_picks(text_emb: torch.Tensor, image_emb: torch.Tensor, ties: str = "none") -> tuple[torch.Tensor, list]:
    """Cosine similarities `[statements, 2 images]` and, for each statement, the image it picks (0 or 1); on a tie,
    None (`ties=none`) or image 2 (`ties=original`, as the original script's `p(image 1) > 0.5`)."""
    sim = torch.nn.functional.normalize(text_emb, dim=-1) @ torch.nn.functional.normalize(image_emb, dim=-1).T
    tied = (sim[:, 0] == sim[:, 1]).tolist()
    picks = [(None if ties == "none" else 1) if tie else int(row[1] > row[0]) for row, tie in zip(sim, tied)]
    return sim, picks


@torch.no_grad()
def evaluate_vlm(checkpoint: str, root, out_dir, device="cpu", name: str = "mmvp_vlm", preprocess: str = "hf",
                 ties: str = "none") -> dict:
    """Each pair in one forward pass (two statements, two images): the original script's unit of scoring."""
    if preprocess not in PREPROCESS:
        raise BenchmarkFormatError(f"benchmark.preprocess: expected one of {', '.join(PREPROCESS)}; got {preprocess!r}")
    if ties not in TIES:
        raise BenchmarkFormatError(f"benchmark.ties: expected one of {', '.join(TIES)}; got {ties!r}")
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    questions, image_dir = load_vlm_questions(root)
    model, tokenizer, image_processor = _load_model(checkpoint, device)
    padding = "max_length" if "siglip" in type(model).__name__.lower() else True  # SigLIP was trained on padded text
    per_pattern = defaultdict(lambda: {"pairs": 0, "correct_pairs": 0})
    predictions = []
    for start in range(0, len(questions) - 1, 2):
        q1, q2 = questions[start], questions[start + 1]
        texts = ["a photo of " + q1["statement"], "a photo of " + q2["statement"]]
        try:
            images = [load_image(image_dir / q["type"] / f"{q['id']}.jpg") for q in (q1, q2)]
        except ImageError as e:
            predictions.append({"ids": [q1["id"], q2["id"]], "type": q1["type"], "correct": False, "error": str(e)})
            per_pattern[q1["type"]]["pairs"] += 1
            continue
        text_in = tokenizer(texts, padding=padding, truncation=True, return_tensors="pt").to(device)
        if preprocess == "openai":
            n_px = model.config.vision_config.image_size
            pixel_in = {"pixel_values": torch.stack([openai_transform(i, n_px) for i in images]).to(device)}
        else:
            pixel_in = image_processor(images=images, return_tensors="pt").to(device)
        text_emb = model.get_text_features(**text_in)
        image_emb = model.get_image_features(**pixel_in)
        text_emb = getattr(text_emb, "pooler_output", text_emb)
        image_emb = getattr(image_emb, "pooler_output", image_emb)
        sim, picks = statement_picks(text_emb, image_emb, ties)
        correct = picks == [0, 1]
        per_pattern[q1["type"]]["pairs"] += 1
        per_pattern[q1["type"]]["correct_pairs"] += correct
        predictions.append({"ids": [q1["id"], q2["id"]], "type": q1["type"], "similarity": sim.tolist(),
                            "picks": picks, "correct": correct, "error": None})
    # types that name a category map by name; the published file's own type names, by the original script's order
    by_name = all(canonical_pattern(folder) in PATTERNS for folder in per_pattern)
    for k, (folder, stats) in enumerate(per_pattern.items()):
        stats["pair_accuracy"] = 100.0 * stats["correct_pairs"] / max(1, stats["pairs"])
        stats["category"] = (canonical_pattern(folder) if by_name else
                             PATTERNS[k] if len(per_pattern) == len(PATTERNS) else folder)
    scores = [v["pair_accuracy"] for v in per_pattern.values()]
    pairs = sum(v["pairs"] for v in per_pattern.values())
    correct = sum(v["correct_pairs"] for v in per_pattern.values())
    results = {"benchmark": name, "checkpoint": str(checkpoint), "root": str(root), "preprocess": preprocess, "ties": ties,
               "primary_metric": "average", "metric_names": ["average", "pair_accuracy"],
               "pair_accuracy": 100.0 * correct / max(1, pairs),  # as everywhere: correct pairs / pairs
               "average": sum(scores) / max(1, len(scores)),  # the paper's number: the mean over the patterns
               "num_pairs": pairs, "num_correct_pairs": correct,
               "unanswerable": sum(bool(p["error"]) for p in predictions), "per_pattern": dict(per_pattern)}
    with open(out_dir / "predictions.jsonl", "w") as f:
        for p in predictions:
            f.write(json.dumps(p) + "\n")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    write_report([results], out_dir)
    print_summary(results)
    return results


class MMVPVLM(Benchmark):
    """`benchmark=mmvp_vlm`: a CLIP-like dual encoder (not an MLLM) picks an image per statement; `preprocess`
    (hf | openai) and `ties` (none | original) as above."""

    name = "mmvp_vlm"
    kind = "encoder"
    primary_metric = "average"
    metric_names = ("average", "pair_accuracy")

    def vlm_root(self):
        return self.section["root"]

    def evaluate_model(self, checkpoint, out_dir, device) -> dict:
        if not checkpoint:
            raise BenchmarkFormatError(f"checkpoint: a CLIP-like model (hub id or directory) is required for {self.name}")
        return evaluate_vlm(checkpoint, self.vlm_root(), out_dir, device, self.name,
                            self.section["preprocess"], self.section["ties"])
