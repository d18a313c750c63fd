"""Evaluation runs of any registered benchmark: answer, judge, score, and write `results.json`,
`predictions.jsonl`, `report.md` and plots."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .benchmarks.base import Benchmark
from .answer_files import match, own_predictions, read_answer_file
from .generation import answer
from .loading import Loaded, load_for_evaluation
from .report import print_summary, write_report


def evaluate_benchmark(benchmark: Benchmark, checkpoint, out_dir, template: str | None = None, batch_size: int | None = None,
                       max_new_tokens: int | None = None, device="cpu", limit: int | None = None,
                       loaded: Loaded | None = None) -> dict:
    """`loaded`: the model of `checkpoint` already loaded (several benchmarks, one load); `batch_size` and
    `max_new_tokens`: None for the benchmark's settings."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = benchmark.items()
    if limit:
        items = items[:limit]
    loaded = loaded or load_for_evaluation(checkpoint, device)
    template = template or loaded.template
    raw = answer(loaded, items, template, batch_size or benchmark.section["batch_size"],
                 max_new_tokens or benchmark.max_new_tokens)
    predictions = [benchmark.judge(p) for p in raw]
    results = {"benchmark": benchmark.name, "checkpoint": str(checkpoint), "template": template, "decoding": "greedy",
               **benchmark.describe()}
    return _finish(benchmark, results, predictions, out_dir)


def rescore(benchmark: Benchmark, predictions_file, out_dir, limit: int | None = None) -> dict:
    """Score a saved answer file again without loading any model: every response is judged anew. `mof`'s own
    `predictions.jsonl`, or another tool's answer file (LLaVA, the MMVP paper's script, POPE, lmms-eval's sample
    logs), matched to the benchmark's questions by id."""
    out_dir = Path(out_dir)
    fmt, rows = read_answer_file(predictions_file)
    if fmt == "mof":
        predictions = benchmark.complete(own_predictions(rows, Path(predictions_file)), Path(predictions_file))
    else:
        items = benchmark.items()[:limit] if limit else benchmark.items()
        predictions = match(rows, items, benchmark.question_id, benchmark.answer_id, Path(predictions_file))
    out_dir.mkdir(parents=True, exist_ok=True)
    judged = [{**benchmark.judge(p), "error": p.get("error")} for p in predictions]
    results = {"benchmark": benchmark.name, "checkpoint": None, "rescored_from": str(predictions_file),
               "answer_format": fmt, **benchmark.describe()}
    return _finish(benchmark, results, judged, out_dir)


def degenerate(predictions: list[dict]) -> str | None:
    """Why the answers say nothing about the model, when they do not: every one the same, or none readable."""
    if len(predictions) < 4:
        return None
    parsed = Counter(p.get("parsed") for p in predictions)
    value, count = parsed.most_common(1)[0]
    if count < len(predictions):
        return None
    return "no answer could be read" if value is None else f"every answer was {value!r}"


def _finish(benchmark: Benchmark, results: dict, predictions: list[dict], out_dir: Path) -> dict:
    with open(out_dir / "predictions.jsonl", "w") as f:
        for p in predictions:
            f.write(json.dumps(p) + "\n")
    results.update(primary_metric=benchmark.primary_metric, metric_names=list(benchmark.metric_names),
                   **benchmark.score(predictions), degenerate=degenerate(predictions))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    write_report([results], out_dir)
    print_summary(results)
    print(f"results: {out_dir / 'results.json'} (answers: predictions.jsonl, table: report.md)")
    return results
