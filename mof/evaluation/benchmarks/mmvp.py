"""MMVP in its official layout, read and written: `Questions.csv` (`Index,Question,Options,Correct Answer`) and
`MMVP Images/<Index>.jpg`. Rows (1, 2), (3, 4), ... are the pairs. A `Pattern` column, when present
(the synthetic benchmark), labels each question's visual pattern."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ...errors import MofError
from ..scoring import parse_response

REQUIRED_COLUMNS = ("Index", "Question", "Options", "Correct Answer")
IMAGE_DIRS = ("MMVP Images", "images")
EXPECTED_LAYOUT = (
    "expected:\n  DIR/Questions.csv        (columns Index,Question,Options,Correct Answer)\n"
    "  DIR/MMVP Images/<Index>.jpg\n"
    "MMVP is published on the Hugging Face hub as the dataset MMVP/MMVP "
    "(e.g. `hf download MMVP/MMVP --repo-type dataset --local-dir DIR`)."
)
# Known label errors of the published file. `lmms_eval`: exactly the changes of lmms-eval's corrected copy of MMVP
# (the labels of 99 and 100, and of 279 and 280, swapped), which tsb0601/MMVP issues 14 and 30 report.
CORRECTION_SETS = {
    "lmms_eval": (((99, 100), (279, 280)),
                  "lmms-eval's corrected MMVP copy: labels of 99<->100 and 279<->280 swapped (tsb0601/MMVP issues 14, 30)"),
}


class BenchmarkFormatError(MofError, ValueError):
    pass


def write_mmvp(out: str | Path, rows: list[dict], images: list) -> dict:
    """`rows`: `{"Question", "Options", "Correct Answer"[, "Pattern"]}` in pair order; `images`: a PIL image
    (or None, for a skeleton to fill in) per row. Index runs 1..N."""
    out = Path(out)
    (out / IMAGE_DIRS[0]).mkdir(parents=True, exist_ok=True)
    columns = list(REQUIRED_COLUMNS) + (["Pattern"] if any("Pattern" in r for r in rows) else [])
    with open(out / "Questions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for index, (row, image) in enumerate(zip(rows, images), 1):
            writer.writerow({**{c: row.get(c, "") for c in columns}, "Index": index})
            if image is not None:
                image.convert("RGB").save(out / IMAGE_DIRS[0] / f"{index}.jpg", quality=95)
    return {"questions": len(rows), "pairs": len(rows) // 2}


@dataclass
class Question:
    index: int
    question: str
    options: str
    answer: str
    image: Path
    pattern: str | None = None


def find_layout(root: str | Path, name: str, image_dirs: tuple, layout: str) -> tuple[Path, Path]:
    """`(Questions.csv, image folder)` of a benchmark folder, or an error showing the expected layout."""
    root = Path(root)
    csv_path = root / "Questions.csv"
    if not csv_path.is_file():
        raise BenchmarkFormatError(f"{name}: no Questions.csv in {root}\n{layout}")
    image_dir = next((root / d for d in image_dirs if (root / d).is_dir()), None)
    if image_dir is None:
        raise BenchmarkFormatError(f"{name}: no '{image_dirs[0]}' folder in {root}\n{layout}")
    return csv_path, image_dir


def read_rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise BenchmarkFormatError(f"{csv_path}: missing columns {missing}; found {columns}; "
                                       f"expected {list(REQUIRED_COLUMNS)} (+ optional Pattern)")
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]


def check_indices(csv_path: Path, indices: list[int]) -> None:
    """Pairs are (1, 2), (3, 4), ... by Index: anything but 1..N in order would pair the wrong questions."""
    if indices != list(range(1, len(indices) + 1)):
        first = next(i for i, (got, want) in enumerate(zip(indices, range(1, len(indices) + 1))) if got != want)
        raise BenchmarkFormatError(
            f"{csv_path}:{first + 2}: Index {indices[first]} where {first + 1} was expected; MMVP pairs questions by "
            f"Index (1, 2), (3, 4), ..., so the rows must be numbered 1..N in order (found {indices[:4]}...)")


def apply_corrections(answers: dict[int, str], corrections: str | None) -> dict:
    """`answers` (Index -> answer) corrected in place; returns `{Index: [old, new, source]}` of what changed."""
    if corrections in (None, "none", False):
        return {}
    if corrections not in CORRECTION_SETS:
        raise BenchmarkFormatError(f"benchmark.corrections: expected one of none, {', '.join(CORRECTION_SETS)}; "
                                   f"got {corrections!r}")
    swaps, source = CORRECTION_SETS[corrections]
    applied = {}
    for a, b in swaps:
        if a in answers and b in answers and answers[a] != answers[b]:
            applied[a], applied[b] = [answers[a], answers[b], source], [answers[b], answers[a], source]
            answers[a], answers[b] = answers[b], answers[a]
    return applied


def load_mmvp(root: str | Path, corrections: str | None = None) -> tuple[list[Question], dict]:
    """The questions (answer keys as option letters, `(a)`), and the corrections applied."""
    csv_path, image_dir = find_layout(root, "MMVP", IMAGE_DIRS, EXPECTED_LAYOUT)
    rows = read_rows(csv_path)
    indices = []
    for line, row in enumerate(rows, 2):
        try:
            indices.append(int(row["Index"]))
        except ValueError:
            raise BenchmarkFormatError(f"{csv_path}:{line}: Index {row['Index']!r} is not a number") from None
    check_indices(csv_path, indices)
    answers = {}
    for line, (index, row) in enumerate(zip(indices, rows), 2):
        letter = parse_response(row["Correct Answer"], row["Options"])
        if letter is None:
            raise BenchmarkFormatError(f"{csv_path}:{line}: Correct Answer {row['Correct Answer']!r} names none of the "
                                       f"options {row['Options']!r}; expected a letter such as (a)")
        answers[index] = f"({letter})"
    applied = apply_corrections(answers, corrections)
    questions = [Question(index, row["Question"], row["Options"], answers[index], image_dir / f"{index}.jpg",
                          row.get("Pattern") or None) for index, row in zip(indices, rows)]
    return questions, applied
