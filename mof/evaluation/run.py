"""Evaluation runs: answer, score, and write `results.json`, `predictions.jsonl`, `report.md` and plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .generation import answer
from .loading import load_for_evaluation
from .benchmarks.mmvp import CORRECTIONS, load_mmvp
from .prompts import instruction
from .report import print_summary, write_report
from .scoring import parse_letter, score

log = logging.getLogger(__name__)


def evaluate_mcq(checkpoint, root, out_dir, benchmark: str = "mmvp", template: str | None = None,
                 batch_size: int = 16, prompt: str | None = "llava15", corrections: bool = False,
                 max_new_tokens: int = 12, device="cpu", limit: int | None = None) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    questions, applied = load_mmvp(root, corrections)
    if limit:
        questions = questions[:limit]
    loaded = load_for_evaluation(checkpoint, device)
    template = template or loaded.template
    predictions = answer(loaded, questions, template, batch_size, instruction(prompt), max_new_tokens)
    with open(out_dir / "predictions.jsonl", "w") as f:
        for p in predictions:
            f.write(json.dumps(p) + "\n")
    results = {"benchmark": benchmark, "checkpoint": str(checkpoint), "root": str(root), "template": template,
               "prompt": prompt, "decoding": "greedy", "corrections_applied": {str(k): v for k, v in applied.items()},
               **score(predictions)}
    return _finish(results, out_dir)


def rescore(predictions_file, out_dir, benchmark: str = "mmvp", corrections: bool = False) -> dict:
    """Score a saved `predictions.jsonl` again (e.g. with corrections) without loading any model."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = [json.loads(line) for line in Path(predictions_file).read_text().splitlines() if line.strip()]
    applied = {}
    for p in predictions:
        if corrections and p["index"] in CORRECTIONS and p["answer"] == CORRECTIONS[p["index"]][0]:
            applied[str(p["index"])] = list(CORRECTIONS[p["index"]])
            p["answer"] = CORRECTIONS[p["index"]][1]
        p["correct"] = p.get("parsed") is not None and p["parsed"] == parse_letter(p["answer"])
    with open(out_dir / "predictions.jsonl", "w") as f:
        for p in predictions:
            f.write(json.dumps(p) + "\n")
    results = {"benchmark": benchmark, "checkpoint": None, "rescored_from": str(predictions_file),
               "corrections_applied": applied, **score(predictions)}
    return _finish(results, out_dir)


def _finish(results: dict, out_dir: Path) -> dict:
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    write_report([results], out_dir)
    print_summary(results)
    return results
