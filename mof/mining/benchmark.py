"""`python -m mof.mining.benchmark RUN`: the pairs kept and written up in a mining run's `review.html` (its export,
`reviewed_pairs.csv`) as a benchmark in MMVP's layout (`Questions.csv` + `MMVP Images/<Index>.jpg`), which
`evaluate.py benchmark=mmvp benchmark.root=...` runs. Images are read from where the run found them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import MofError, one_line_errors, refuse_finished
from ..evaluation.benchmarks.base import csv_records
from ..evaluation.benchmarks.mmvp import write_mmvp
from ..evaluation.scoring import parse_options
from .outputs import REVIEW_COLUMNS
from .sources import iter_images


class ReviewError(MofError, ValueError):
    pass


def reviewed_rows(path: Path) -> list[dict]:
    """The reviewed pairs, each checked: two different images, options (a) and (b), each image's answer one of them
    and the two answers different (a pair asks one question whose answer differs between its images)."""
    expected = f"the columns {','.join(REVIEW_COLUMNS)} (review.html's export)"
    if not path.is_file():
        raise ReviewError(f"{path}: no such file; export it from review.html (export reviewed_pairs.csv)")
    columns, records = csv_records(path, expected)
    if columns != list(REVIEW_COLUMNS):
        raise ReviewError(f"{path}: expected {expected}, found {columns}")
    if not records:
        raise ReviewError(f"{path}: no reviewed pair; keep at least one and write its question")
    rows = []
    for line, r in records:
        options = parse_options(r["options"])
        answers = (r["answer_a"].strip("()").lower(), r["answer_b"].strip("()").lower())
        if not r["question"] or sorted(options) != ["a", "b"] or not all(options.values()):
            raise ReviewError(f"{path}:{line}: expected a question and the options '(a) ... (b) ...', got "
                              f"{r['question']!r} / {r['options']!r}")
        if any(a not in ("a", "b") for a in answers) or answers[0] == answers[1]:
            raise ReviewError(f"{path}:{line}: expected answers (a) and (b), one per image, different; got "
                              f"{r['answer_a']!r} and {r['answer_b']!r}")
        if r["image_a"] == r["image_b"]:
            raise ReviewError(f"{path}:{line}: both images are {r['image_a']}")
        rows.append({**r, "answers": answers})
    return rows


def build_benchmark(run: Path, reviewed: Path | None = None, out: Path | None = None, overwrite: bool = False) -> Path:
    run = Path(run)
    reviewed = Path(reviewed or run / "reviewed_pairs.csv")
    out = Path(out or run / "benchmark_reviewed")
    summary_file = run / "summary.json"
    if not summary_file.is_file():
        raise ReviewError(f"{run}: no summary.json; expected the folder of a finished mine.py run")
    summary = json.loads(summary_file.read_text())
    rows = reviewed_rows(reviewed)
    wanted = {i for r in rows for i in (r["image_a"], r["image_b"])}   # the collection listed again, these kept
    refs = {r.id: r for r in iter_images(summary.get("image_list") or summary["images"], summary.get("image_root"))
            if r.id in wanted}
    missing = sorted(wanted - set(refs))
    if missing:
        raise ReviewError(f"{reviewed}: images not in the run's collection: {', '.join(missing[:5])}")
    refuse_finished(out, ["Questions.csv"], overwrite)
    questions, images = [], []
    for r in rows:
        for side, answer in zip(("image_a", "image_b"), r["answers"]):
            questions.append({"Question": r["question"], "Options": r["options"], "Correct Answer": f"({answer})"})
            images.append(refs[r[side]].open())
    info = write_mmvp(out, questions, images)
    print(f"benchmark: {info['pairs']} pairs ({info['questions']} questions) in {out}; run it with "
          f"python evaluate.py benchmark=mmvp benchmark.root={out} checkpoint=...")
    return out


@one_line_errors
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mof.mining.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a mine.py run folder (summary.json, review.html)")
    p.add_argument("--reviewed", help="review.html's export (default: RUN/reviewed_pairs.csv)")
    p.add_argument("--out", help="the benchmark folder to write (default: RUN/benchmark_reviewed)")
    p.add_argument("--overwrite", action="store_true", help="replace a benchmark already written there")
    a = p.parse_args(argv)
    return build_benchmark(Path(a.run), a.reviewed and Path(a.reviewed), a.out and Path(a.out), a.overwrite)


if __name__ == "__main__":
    main()
