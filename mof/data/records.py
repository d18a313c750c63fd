"""Reading LLaVA-format files: a JSON list or JSONL of `{id, image?, conversations}` records.

Every record is checked by type when read; one that does not fit is skipped and counted under a reason,
never a crash mid-epoch. A file that is not such a list at all is a one-line error naming it.
"""

from __future__ import annotations

import codecs
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import MofError


class DataFormatError(MofError, ValueError):
    pass


@dataclass
class Source:
    """One dataset in a mix: its file, the folder its `image` paths are relative to, its weight."""

    path: str
    image_root: str | None = None
    weight: float = 1.0


def record_problem(record) -> str | None:
    """The reason a record cannot be used, judged by its types alone; None when it is well formed."""
    if not isinstance(record, dict):
        return "not_an_object"
    image = record.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip() or "\x00" in image):
        return "bad_image_field"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "no_conversations"
    if not all(isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("value"), str) for t in turns):
        return "bad_turn"
    return None


def _text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text (invalid byte at offset {e.start}); expected a UTF-8 JSON list "
                              "or JSONL file") from None


def _json_lines(path: Path, text: str) -> tuple[list, Counter]:
    records, skipped, first_error = [], Counter(), None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            skipped["invalid_json_line"] += 1
            first_error = first_error or f"{path}:{lineno}: not valid JSON ({e.msg}); expected one JSON object per line"
    if not records and first_error:
        raise DataFormatError(first_error)
    return records, skipped


def read_records(path: str | Path) -> tuple[list[dict], Counter]:
    """Well-formed records, and the counts of lines/records skipped while reading, by reason."""
    records, skipped = load_json_records(path)
    kept = []
    for record in records:
        problem = record_problem(record)
        if problem:
            skipped[problem] += 1
        else:
            kept.append(record)
    return kept, skipped


def load_json_records(path: str | Path) -> tuple[list, Counter]:
    """The records of a LLaVA-format file (a JSON list, or JSONL whatever its name), unchecked, and the lines
    skipped as invalid JSON: the one reader of these files, for training and for mining's image lists."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: dataset file not found")
    text = _text(path)
    if not text.strip():
        raise DataFormatError(f"{path}: empty file; expected a JSON list or JSONL of records")
    if path.suffix == ".jsonl":
        records, skipped = _json_lines(path, text)
    else:
        try:
            records, skipped = json.loads(text), Counter()
        except json.JSONDecodeError as e:
            if not text.lstrip().startswith("["):  # JSONL in a file not named .jsonl
                records, skipped = _json_lines(path, text)
            else:
                raise DataFormatError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
        else:
            if not isinstance(records, list):
                keys = f" with keys {sorted(records)[:5]}" if isinstance(records, dict) else ""
                raise DataFormatError(f"{path}: expected a JSON list or JSONL of records, got a top-level "
                                      f"{type(records).__name__}{keys}")
    return records, skipped


def mix(sources: list[Source], seed: int) -> tuple[list[tuple[dict, int]], Counter]:
    """`(record, source index)` pairs: each source contributes `round(len * weight)` records
    (whole repeats plus a seeded random remainder)."""
    rng = random.Random(seed)
    out, skipped = [], Counter()
    for i, src in enumerate(sources):
        if src.weight < 0:
            raise DataFormatError(f"{src.path}: weight must be >= 0, got {src.weight}")
        records, bad = read_records(src.path)
        skipped.update(bad)
        whole, frac = divmod(src.weight, 1.0)
        chosen = records * int(whole) + rng.sample(records, round(len(records) * frac))
        out += [(r, i) for r in chosen]
    return out, skipped
