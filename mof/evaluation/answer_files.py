"""Answer files as the field writes them, read for re-scoring (`benchmark.predictions=FILE`): each line becomes
`{"line", "id", "split", "response"}`, and the benchmark matches the ids to its questions.

| format     | written by                                              | id                       | response            |
|------------|---------------------------------------------------------|--------------------------|---------------------|
| mof        | `evaluate.py` (`predictions.jsonl`)                     | `index`                  | `response`          |
| llava      | LLaVA's `model_vqa_loader` / `model_vqa`                | `question_id`            | `text`              |
| mmvp_paper | the MMVP paper's `scripts/evaluate_mllm.py`             | `question_id` (= Index)  | `response`          |
| pope       | answer files for POPE's own `evaluate.py`               | `question_id`            | `answer`            |
| lmms_eval  | lmms-eval's `--log_samples` (`*_samples_<task>.jsonl`)  | the doc's `Index` or `question_id`, else `doc_id` + 1 | `filtered_resps[0]` |

A POPE question is named by its split and id (the three split files number their questions alike): the split is the
line's `category` (lmms-eval, LLaVA's metadata) or `split`, or the one split `benchmark.splits` asks for.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .benchmarks.base import BenchmarkFormatError, json_lines

FORMATS = {  # the format's name: the keys that identify it, checked in this order
    "mof": ("index", "response"),
    "lmms_eval": ("doc_id", "doc"),
    "mmvp_paper": ("question_id", "response"),
    "llava": ("question_id", "text"),
    "pope": ("question_id", "answer"),
}


def detect(first: dict, path: Path) -> str:
    for name, keys in FORMATS.items():
        if all(k in first for k in keys):
            return name
    known = "; ".join(f"{n} ({', '.join(k)})" for n, k in FORMATS.items())
    raise BenchmarkFormatError(f"{path}:1: not an answer file mof knows (keys {sorted(first)[:8]}); expected one of: {known}")


def _lmms_eval_row(row: dict) -> tuple:
    doc = row["doc"] if isinstance(row["doc"], dict) else {}
    answer = row.get("filtered_resps") or row.get("resps") or [None]
    while isinstance(answer, list):   # [[text]] or [text]
        answer = answer[0] if answer else None
    key = doc.get("Index", doc.get("index", doc.get("question_id")))
    doc_id = row["doc_id"]
    if key is None and isinstance(doc_id, int) and not isinstance(doc_id, bool):
        key = doc_id + 1
    return key, answer, doc.get("category") or doc.get("split")


def read_answer_file(path: str | Path) -> tuple[str, list[dict]]:
    """`(format, rows)` of an answer file; a line of another shape, or without an id or a text answer, is one error
    naming the line."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkFormatError(f"benchmark.predictions: no file at {path}")
    rows, fmt = [], None
    for line, value in json_lines(path, "answer"):
        if not isinstance(value, dict):
            raise BenchmarkFormatError(f"{path}:{line}: expected a JSON object, got {str(value)[:80]}")
        fmt = fmt or detect(value, path)
        if not all(k in value for k in FORMATS[fmt]):
            raise BenchmarkFormatError(f"{path}:{line}: expected the keys {', '.join(FORMATS[fmt])} like the lines "
                                       f"before it ({fmt} format)")
        if fmt == "lmms_eval":
            key, response, split = _lmms_eval_row(value)
        else:
            key = value[FORMATS[fmt][0]]
            response = value.get({"mof": "response", "mmvp_paper": "response", "llava": "text", "pope": "answer"}[fmt])
            meta = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
            split = value.get("split") or value.get("category") or meta.get("category")
        if fmt == "mof" and (isinstance(key, bool) or not isinstance(key, int)):
            raise BenchmarkFormatError(f"{path}:{line}: 'index' is {key!r}; expected the question's number (mof format)")
        if isinstance(key, bool) or not isinstance(key, (int, str)) or key == "":
            raise BenchmarkFormatError(f"{path}:{line}: no question id ({fmt} format); expected a number or text")
        if not isinstance(response, (str, type(None))):
            raise BenchmarkFormatError(f"{path}:{line}: the answer is {type(response).__name__}; expected text")
        rows.append({"line": line, "id": key, "split": split, "response": response, "raw": value})
    if not rows:
        raise BenchmarkFormatError(f"{path}: holds no predictions (expected one answer per line, a JSON object)")
    return fmt, rows


def own_predictions(rows: list[dict], path: Path) -> list[dict]:
    """The lines of mof's own `predictions.jsonl` as written (the benchmark completes what they lack); an index
    answered twice would score its pair twice, so it is an error naming the indices."""
    counts = Counter(row["id"] for row in rows)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        raise BenchmarkFormatError(f"{path}: index {', '.join(map(str, repeated[:10]))} appears more than once; "
                                   "each question is scored once")
    return [row["raw"] for row in rows]


def match(rows: list[dict], items: list, question_id, answer_id, path: Path) -> list[dict]:
    """Each item's fields with its answer's `response`, in the benchmark's order. An id answered twice, unknown to
    the benchmark, or a question left unanswered is one error naming them."""
    by_id = {question_id(item.fields): item for item in items}
    seen = {}
    for row in rows:
        key = answer_id(row, path)
        if key in seen:
            raise BenchmarkFormatError(f"{path}:{row['line']}: question {_show(key)} is answered again (first on line "
                                       f"{seen[key]['line']}); each question is scored once")
        if key not in by_id:
            raise BenchmarkFormatError(f"{path}:{row['line']}: question {_show(key)} is not in the benchmark "
                                       f"({len(by_id)} questions)")
        seen[key] = row
    missing = [k for k in by_id if k not in seen]
    if missing:
        raise BenchmarkFormatError(f"{path}: no answer for question {', '.join(map(_show, missing[:10]))}"
                                   f"{' ...' if len(missing) > 10 else ''} ({len(missing)} of {len(by_id)}); a score "
                                   "over part of a benchmark is not the benchmark's (benchmark.limit, or POPE's "
                                   "benchmark.splits, choose a part)")
    return [{**item.fields, "response": seen[k]["response"]} for k, item in by_id.items()]


def _show(key) -> str:
    return "/".join(map(str, key)) if isinstance(key, tuple) else str(key)
