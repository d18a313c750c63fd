"""Reading LLaVA-format files: a JSON list or JSONL of `{id, image?, conversations}` records."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


class DataFormatError(ValueError):
    pass


@dataclass
class Source:
    """One dataset in a mix: its file, the folder its `image` paths are relative to, its weight."""

    path: str
    image_root: str | None = None
    weight: float = 1.0


def read_records(path: str | Path) -> tuple[list[dict], Counter]:
    """Records and the counts of lines/records skipped while reading (invalid JSONL lines, non-objects)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: dataset file not found")
    text = path.read_text(encoding="utf-8")
    skipped = Counter()
    if path.suffix == ".jsonl" or not text.lstrip().startswith("["):
        records, first_error = [], None
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
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from e
        if not isinstance(records, list):
            raise DataFormatError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    kept = [r for r in records if isinstance(r, dict)]
    if len(kept) < len(records):
        skipped["not_an_object"] += len(records) - len(kept)
    return kept, skipped


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
