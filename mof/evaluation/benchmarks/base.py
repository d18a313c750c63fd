"""What every benchmark is: its items (an image and a prompt each), how one response is judged, how the judged
predictions score, and which of the scores is the primary metric. Benchmarks are registered in `__init__.py`."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from omegaconf import OmegaConf
from PIL import Image

from ...errors import MofError

SETTINGS = Path(__file__).resolve().parents[2] / "conf" / "benchmark"   # `benchmark=<name>`'s files


@dataclass
class Item:
    id: int                    # unique within the benchmark run, in its order
    image: Path | Image.Image  # a file, or a decoded image (lmms-eval hands those)
    prompt: str                # the text after the image
    fields: dict = field(default_factory=dict)   # copied into the item's prediction (question, answer, ...)


class Benchmark:
    """Args: `section`: the benchmark's config section (`mof/conf/benchmark/<name>.yaml`, plain dict);
    `data_dir`: where benchmarks generated on first use are written."""

    name: ClassVar[str]
    kind: ClassVar[str] = "mllm"                 # what it scores: "mllm" (answers) | "encoder" (a CLIP-like model)
    primary_metric: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]      # the primary first; what reports, loggers and sweeps read

    def __init__(self, section: dict, data_dir: str | Path | None = None):
        """`section` over the benchmark's own defaults (its YAML), so a benchmark built without Hydra has the same
        settings as `evaluate.py benchmark=<name>`; no default is stated in code."""
        defaults = benchmark_defaults(self.name, data_dir)
        self.section = {k: {**defaults[k], **v} if isinstance(v, dict) and isinstance(defaults.get(k), dict) else v
                        for k, v in {**defaults, **dict(section)}.items()}
        self.data_dir = data_dir
        self.max_new_tokens = self.section.get("max_new_tokens")

    def items(self) -> list[Item]:
        raise NotImplementedError

    def judge(self, prediction: dict) -> dict:
        """`prediction` (an item's fields + `response`, None when it could not be answered) with what the response
        means (`parsed`) and whether it is right (`correct`)."""
        raise NotImplementedError

    def score(self, predictions: list[dict]) -> dict:
        raise NotImplementedError

    def complete(self, predictions: list[dict], source: Path) -> list[dict]:
        """Predictions read back from a file (another tool's too), with what scoring needs and they lack."""
        return predictions

    def describe(self) -> dict:
        """What the results should record of this run's settings."""
        return {}

    def question_id(self, fields: dict):
        """The id another tool's answer file names this question by (see `evaluation/answer_files.py`)."""
        return fields["index"]

    def answer_id(self, row: dict, source: Path):
        """The question an answer-file line names (its `id` and `split`), comparable with `question_id`."""
        try:
            return int(row["id"])
        except ValueError:
            raise BenchmarkFormatError(f"{source}:{row['line']}: question id {row['id']!r} is not a number") from None


class BenchmarkFormatError(MofError, ValueError):
    pass


def benchmark_defaults(name: str, data_dir: str | Path | None = None) -> dict:
    """A benchmark's settings as `mof/conf/benchmark/<name>.yaml` states them, its `defaults:` parents first (as
    Hydra composes them); `${paths.data_dir}` is `data_dir` (a path under it is None without one)."""
    raw = OmegaConf.to_container(OmegaConf.load(SETTINGS / f"{name}.yaml"), resolve=False)
    merged = {}
    for parent in raw.pop("defaults", []):
        merged.update(benchmark_defaults(parent, data_dir) if parent != "_self_" else {})
    merged.update(raw)

    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, str) and "${paths.data_dir}" in value:
            return value.replace("${paths.data_dir}", str(data_dir)) if data_dir is not None else None
        return value

    return fill(merged)


def json_lines(path: Path, what: str):
    """`(line number, value)` of each non-empty line of a JSON-lines file; bad JSON or bytes name their line."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[:e.start].count(b"\n") + 1
        raise BenchmarkFormatError(f"{path}:{bad}: not UTF-8 text (byte {e.start}); "
                                   f"expected one {what} per line, JSON in UTF-8") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise BenchmarkFormatError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one {what} per line") from None


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


def csv_records(path: Path, what: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """`(header, [(line, {column: value})])` of a benchmark's CSV, every value stripped. Whatever is wrong with the
    file (not UTF-8, a field over the csv module's limit, a row with more or fewer values than the header, no header)
    is one `BenchmarkFormatError` naming the file and line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BenchmarkFormatError(f"{path}: not UTF-8 text (invalid byte at offset {e.start}); expected {what}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as e:
        raise BenchmarkFormatError(f"{path}:{reader.line_num}: not readable as CSV ({e}); expected {what}") from None
    if not rows:
        raise BenchmarkFormatError(f"{path}: empty; expected {what}")
    header = [c.strip() for c in rows[0][1]]
    records = []
    for line, row in rows[1:]:
        if len(row) < len(header) or any(cell.strip() for cell in row[len(header):]):  # trailing empty cells: fine
            raise BenchmarkFormatError(f"{path}:{line}: {len(row)} values for {len(header)} columns ({', '.join(header)})")
        records.append((line, {k: v.strip() for k, v in zip(header, row)}))
    return header, records
