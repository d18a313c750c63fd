"""Evaluation runs: answer, score, and write `results.json`, `predictions.jsonl`, `report.md` and plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .generation import answer
from .loading import load_for_evaluation
from .benchmarks.mmvp import BenchmarkFormatError, apply_corrections, load_mmvp
from .prompts import instruction
from .report import print_summary, write_report
from .scoring import parse_response, score

log = logging.getLogger(__name__)


def evaluate_mcq(checkpoint, root, out_dir, benchmark: str = "mmvp", template: str | None = None,
                 batch_size: int = 16, prompt: str | None = "llava15", corrections: str | None = None,
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
               "prompt": prompt, "decoding": "greedy", "corrections": corrections or "none",
               "corrections_applied": {str(k): v for k, v in applied.items()},
               **score(predictions)}
    return _finish(results, out_dir)


def read_predictions(path: Path) -> list[dict]:
    """`predictions.jsonl` lines with at least `index` and `response` (optional `answer`, `options`, `pattern`)."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkFormatError(f"benchmark.predictions: no file at {path}")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            p = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchmarkFormatError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one prediction per line") from None
        if not isinstance(p, dict) or not isinstance(p.get("index"), int) or not isinstance(p.get("response", ""), (str, type(None))):
            raise BenchmarkFormatError(f"{path}:{lineno}: expected an object with an integer 'index' and a 'response' text")
        out.append(p)
    return out


def rescore(predictions_file, out_dir, benchmark: str = "mmvp", corrections: str | None = None, root=None) -> dict:
    """Score a saved predictions file again (another tool's too) without loading any model: every response is
    parsed anew; answers and options come from the file or, where it lacks them, from the benchmark at `root`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = read_predictions(predictions_file)
    questions = {}
    if any("answer" not in p or "options" not in p for p in predictions):
        if root is None or not (Path(root) / "Questions.csv").is_file():
            raise BenchmarkFormatError(f"{predictions_file}: predictions without 'answer'/'options' need the benchmark: "
                                       f"set benchmark.root (now {root})")
        questions = {q.index: q for q in load_mmvp(root)[0]}
    answers, rows = {}, []
    for p in predictions:
        q = questions.get(p["index"])
        options = p.get("options") or (q.options if q else "")
        answer = p.get("answer") or (q.answer if q else None)
        letter = parse_response(answer, options) if answer else None
        if letter is None:
            raise BenchmarkFormatError(f"{predictions_file}: no usable answer for index {p['index']} ({answer!r})")
        answers[p["index"]] = f"({letter})"
        rows.append({**p, "options": options, "pattern": p.get("pattern") or (q.pattern if q else None)})
    applied = apply_corrections(answers, corrections)
    for p in rows:
        p["answer"] = answers[p["index"]]
        p["parsed"] = parse_response(p["response"], p["options"]) if p.get("response") is not None else None
        p["correct"] = p["parsed"] is not None and f"({p['parsed']})" == p["answer"]
        p.setdefault("error", None)
    with open(out_dir / "predictions.jsonl", "w") as f:
        for p in rows:
            f.write(json.dumps(p) + "\n")
    results = {"benchmark": benchmark, "checkpoint": None, "rescored_from": str(predictions_file),
               "corrections": corrections or "none", "corrections_applied": {str(k): v for k, v in applied.items()},
               **score(rows)}
    return _finish(results, out_dir)


def _finish(results: dict, out_dir: Path) -> dict:
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    write_report([results], out_dir)
    print_summary(results)
    return results
