"""MMVP in its official layout, read and written: `Questions.csv` (`Index,Question,Options,Correct Answer`) and
`MMVP Images/<Index>.jpg`. Rows (1, 2), (3, 4), ... are the pairs. A `Pattern` column, when present
(the synthetic benchmark), labels each question's visual pattern."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

REQUIRED_COLUMNS = ("Index", "Question", "Options", "Correct Answer")
IMAGE_DIRS = ("MMVP Images", "images")
EXPECTED_LAYOUT = (
    "expected:\n  DIR/Questions.csv        (columns Index,Question,Options,Correct Answer)\n"
    "  DIR/MMVP Images/<Index>.jpg\n"
    "MMVP is published on the Hugging Face hub as the dataset MMVP/MMVP "
    "(e.g. `hf download MMVP/MMVP --repo-type dataset --local-dir DIR`)."
)
# Known label errors (lmms-eval's corrected copy; tsb0601/MMVP issue 30): Index -> (as published, corrected).
CORRECTIONS = {100: ("(b)", "(a)"), 280: ("(b)", "(a)")}


class BenchmarkFormatError(ValueError):
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


def load_mmvp(root: str | Path, corrections: bool = False) -> tuple[list[Question], dict]:
    """The questions, and the corrections applied (Index -> [old, new])."""
    csv_path, image_dir = find_layout(root, "MMVP", IMAGE_DIRS, EXPECTED_LAYOUT)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise BenchmarkFormatError(f"{csv_path}: missing columns {missing}; found {columns}; "
                                       f"expected {list(REQUIRED_COLUMNS)} (+ optional Pattern)")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    questions, applied = [], {}
    for line, row in enumerate(rows, 2):
        try:
            index = int(row["Index"])
        except ValueError:
            raise BenchmarkFormatError(f"{csv_path}:{line}: Index {row['Index']!r} is not a number") from None
        answer = row["Correct Answer"]
        if corrections and index in CORRECTIONS and answer == CORRECTIONS[index][0]:
            applied[index] = list(CORRECTIONS[index])
            answer = CORRECTIONS[index][1]
        questions.append(Question(index, row["Question"], row["Options"], answer, image_dir / f"{index}.jpg",
                                  row.get("Pattern") or None))
    return questions, applied
