"""MMVP in its official layout, read and written: `Questions.csv` (`Index,Question,Options,Correct Answer`) and
`MMVP Images/<Index>.jpg`. Rows (1, 2), (3, 4), ... are the pairs. A `Pattern` column, when present
(the synthetic benchmark), labels each question's visual pattern."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...data.patterns import PATTERNS, canonical_pattern
from ...data.prompts import format_mcq_prompt, instruction, lmms_eval_mcq_prompt, paper_mcq_prompt
from ..scoring import READERS, parse_response, score
from .base import Benchmark, BenchmarkFormatError, Item, csv_records, find_layout

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


@dataclass(frozen=True)
class Scoring:
    """How `benchmark.scoring` asks and reads: the prompt (None: the `prompt` setting's style), the reader of a
    response's letter, and the defaults of `corrections` and `max_new_tokens`."""
    prompt: Callable[[str, str], str] | None
    reader: str
    corrections: str
    max_new_tokens: int


SCORINGS = {
    # mof: LLaVA-1.5's prompt and mof's reader (brackets, markdown, negations; "both" is no answer).
    "mof": Scoring(None, "mof", "none", 12),
    # lmms_eval: lmms-eval 0.7.3's `mmvp` task exactly: its prompt, its reader, its corrected answer keys, 16 tokens.
    "lmms_eval": Scoring(lmms_eval_mcq_prompt, "lmms_eval", "lmms_eval", 16),
    # paper: the paper's prompt (question and options joined by a space, no instruction). The paper graded the free
    # answers with GPT-4 (`scripts/gpt_grader.py`) and sampled at temperature 0.2; mof decodes greedily and reads
    # the answer with its own reader (an answer naming one option, by letter or by text, not negated).
    "paper": Scoring(paper_mcq_prompt, "mof", "none", 128),
}


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


def read_rows(csv_path: Path) -> list[dict]:
    expected = f"the columns {', '.join(REQUIRED_COLUMNS)} (+ optional Pattern)"
    columns, records = csv_records(csv_path, expected)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise BenchmarkFormatError(f"{csv_path}: missing columns {missing}; found {columns}; expected {expected}")
    return [row for _, row in records]


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


def read_pattern_map(path: str | Path) -> dict[int, str]:
    """`Index,Pattern` rows (MMVP's published file has no pattern column) -> {Index: pattern}."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkFormatError(f"benchmark.patterns: no file at {path}; expected a CSV with columns Index,Pattern")
    columns, records = csv_records(path, "the columns Index,Pattern")
    if columns[:2] != ["Index", "Pattern"]:
        raise BenchmarkFormatError(f"{path}: expected the columns Index,Pattern, found {columns}")
    out = {}
    for line, row in records:
        try:
            index = int(row["Index"])
        except (TypeError, ValueError):
            raise BenchmarkFormatError(f"{path}:{line}: Index {row['Index']!r} is not a number") from None
        pattern = canonical_pattern(row["Pattern"] or "")
        if pattern not in PATTERNS:
            raise BenchmarkFormatError(f"{path}:{line}: unknown pattern {row['Pattern']!r}; expected one of "
                                       f"{', '.join(PATTERNS)}")
        out[index] = pattern
    return out


def with_patterns(questions: list[Question], patterns: dict[int, str] | None, source) -> list[Question]:
    """Questions with their patterns (a mapping file wins over a Pattern column), in MMVP-VLM's names; both
    questions of a pair must share one."""
    for q in questions:
        q.pattern = patterns.get(q.index, q.pattern) if patterns else q.pattern
        q.pattern = canonical_pattern(q.pattern) if q.pattern else None
    for a, b in zip(questions[::2], questions[1::2]):
        if a.pattern != b.pattern:
            raise BenchmarkFormatError(f"{source}: questions {a.index} and {b.index} form a pair but have the patterns "
                                       f"{a.pattern!r} and {b.pattern!r}; a pair has one pattern")
    return questions


class MMVP(Benchmark):
    """`benchmark=mmvp`: `root` (the official layout), `scoring` (mof | lmms_eval | paper), `prompt` (with
    `scoring=mof`), `corrections`, `patterns` (an Index,Pattern file)."""

    name = "mmvp"
    primary_metric = "pair_accuracy"
    metric_names = ("pair_accuracy", "question_accuracy")

    def __init__(self, section: dict, data_dir=None):
        super().__init__(section, data_dir)
        mode = self.section["scoring"]
        if mode not in SCORINGS:
            raise BenchmarkFormatError(f"benchmark.scoring: expected one of {', '.join(SCORINGS)}; got {mode!r}")
        self.scoring_name, self.scoring = mode, SCORINGS[mode]
        own_prompt = self.scoring.prompt is not None
        if own_prompt and self.section.get("prompt") is not None:
            raise BenchmarkFormatError(f"benchmark.prompt: scoring={mode} asks with its own prompt; leave "
                                       f"benchmark.prompt unset (it is for scoring=mof), got {self.section['prompt']!r}")
        # the settings in force, resolved once: the section's, else the scoring mode's
        self.prompt_name = mode if own_prompt else (self.section.get("prompt") or "llava15")
        self.corrections = self.section.get("corrections")
        if self.corrections is None:
            self.corrections = self.scoring.corrections
        self.max_new_tokens = self.section.get("max_new_tokens") or self.scoring.max_new_tokens

    def root(self) -> Path:
        if not self.section.get("root"):
            raise BenchmarkFormatError(f"benchmark.root: expected the {self.name} folder (Questions.csv and its "
                                       "images); none given and no data_dir to find it under")
        return Path(self.section["root"])

    def questions(self) -> tuple[list[Question], dict]:
        questions, applied = load_mmvp(self.root(), self.corrections)
        patterns = self.section.get("patterns")
        return with_patterns(questions, read_pattern_map(patterns) if patterns else None, patterns or self.root()), applied

    def prompt(self, question: str, options: str) -> str:
        if self.scoring.prompt is not None:
            return self.scoring.prompt(question, options)
        return format_mcq_prompt(question, options, instruction(self.prompt_name))

    def items(self) -> list[Item]:
        questions, self._applied = self.questions()
        return [Item(q.index, q.image, self.prompt(q.question, q.options),
                     {"index": q.index, "question": q.question, "options": q.options, "answer": q.answer,
                      "pattern": q.pattern}) for q in questions]

    def judge(self, p: dict) -> dict:
        read = READERS[self.scoring.reader]
        parsed = read(p["response"], p["options"]) if p.get("response") is not None else None
        return {**p, "parsed": parsed, "correct": parsed is not None and f"({parsed})" == p["answer"]}

    def score(self, predictions: list[dict]) -> dict:
        return score(predictions)

    def describe(self) -> dict:
        applied = getattr(self, "_applied", {})
        return {"root": str(self.section.get("root")), "scoring": self.scoring_name, "prompt": self.prompt_name,
                "corrections": self.corrections or "none",
                "corrections_applied": {str(k): v for k, v in applied.items()}}

    def complete(self, predictions: list[dict], source: Path) -> list[dict]:
        """Answers and options from the file or, where it lacks them, from the benchmark at `root`; then the
        corrections (the file's own answer keys are the published ones) and the pattern mapping."""
        questions = {}
        if any("answer" not in p or "options" not in p for p in predictions):
            root = self.section.get("root")
            if root is None or not (Path(root) / "Questions.csv").is_file():
                raise BenchmarkFormatError(f"{source}: predictions without 'answer'/'options' need the benchmark: "
                                           f"set benchmark.root (now {root})")
            questions = {q.index: q for q in load_mmvp(root)[0]}
        given = {p["index"] for p in predictions}
        unknown = sorted(given - set(questions)) if questions else []
        if unknown:
            raise BenchmarkFormatError(f"{source}: index {', '.join(map(str, unknown[:10]))} is not in the benchmark "
                                       f"at {self.section.get('root')}")
        alone = sorted(i for i in given if (i + 1 if i % 2 else i - 1) not in given)  # pairs are (1, 2), (3, 4), ...
        if alone:
            raise BenchmarkFormatError(f"{source}: index {', '.join(map(str, alone[:10]))} without the other question "
                                       "of its pair; pair accuracy needs both")
        patterns = read_pattern_map(self.section["patterns"]) if self.section.get("patterns") else {}
        answers, rows = {}, []
        for p in predictions:
            q = questions.get(p["index"])
            options = p.get("options") or (q.options if q else "")
            answer = p.get("answer") or (q.answer if q else None)
            letter = parse_response(answer, options) if answer else None
            if letter is None:
                raise BenchmarkFormatError(f"{source}: no usable answer for index {p['index']} ({answer!r})")
            answers[p["index"]] = f"({letter})"
            pattern = patterns.get(p["index"]) or p.get("pattern") or (q.pattern if q else None)
            rows.append({**p, "options": options, "pattern": canonical_pattern(pattern) if pattern else None})
        self._applied = apply_corrections(answers, self.corrections)
        return [{**p, "answer": answers[p["index"]]} for p in rows]
