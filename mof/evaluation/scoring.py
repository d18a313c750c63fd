"""Answer parsing and MMVP scoring: question accuracy and pair accuracy (both questions of a pair right)."""

from __future__ import annotations

import re
from collections import defaultdict

_OPTION = re.compile(r"\(([a-z])\)\s*([^()]*?)\s*(?=\([a-z]\)|$)", re.IGNORECASE)


def parse_options(options: str) -> dict[str, str]:
    """`(a) Standing (b) Sitting` -> {"a": "Standing", "b": "Sitting"}."""
    return {m.group(1).lower(): m.group(2).strip() for m in _OPTION.finditer(options)}


def parse_response(response: str, options: str) -> str | None:
    """The option letter a response picks, or None. Handles `(a)`, `a`, `A.`, `The answer is (b) Sitting`,
    or the text of exactly one option."""
    opts = parse_options(options)
    letters = "".join(opts) or "ab"
    text = response.strip()
    first_line = text.splitlines()[0].strip() if text else ""
    bare = re.fullmatch(rf"\(?([{letters}])\)?[.):,]?", first_line, re.IGNORECASE)
    if bare:  # `a`, `(b)`, `A.` alone on the first line, whatever explanation follows
        return bare.group(1).lower()
    patterns = (
        rf"^\(([{letters}])\)",                              # (a) ...
        rf"^([{letters}])(?:[.):,]|\s*$)",                     # a / A. / b) ...
        rf"\(([{letters}])\)",                               # ... (b) ... anywhere
        rf"answer\s*(?:is|:)?\s*\(?([{letters}])\b",         # The answer is b
        rf"\boption\s*\(?([{letters}])\b",                   # option B
    )
    for pattern in patterns:
        m = re.search(pattern, text, re.IGNORECASE)
        if m:
            return m.group(1).lower()
    hits = [k for k, v in opts.items() if v and re.search(rf"\b{re.escape(v)}\b", text, re.IGNORECASE)]
    return hits[0] if len(hits) == 1 else None


def score(predictions: list[dict]) -> dict:
    """`predictions`: dicts with `index`, `correct` (bool), `parsed` (letter or None), optional `pattern`.

    Pairs are (1, 2), (3, 4), ...; a pair counts only if both of its questions are right.
    """
    pairs = defaultdict(list)
    for p in predictions:
        pairs[(p["index"] - 1) // 2].append(p)
    n_q = len(predictions)
    right_q = sum(bool(p["correct"]) for p in predictions)
    complete = {k: v for k, v in pairs.items() if len(v) == 2}
    right_pairs = sum(all(p["correct"] for p in v) for v in complete.values())
    per_pattern = {}
    for k, v in complete.items():
        pattern = v[0].get("pattern")
        if pattern is None:
            continue
        stats = per_pattern.setdefault(pattern, {"pairs": 0, "correct_pairs": 0})
        stats["pairs"] += 1
        stats["correct_pairs"] += all(p["correct"] for p in v)
    for stats in per_pattern.values():
        stats["pair_accuracy"] = 100.0 * stats["correct_pairs"] / stats["pairs"]
    return {
        "question_accuracy": 100.0 * right_q / max(1, n_q),
        "pair_accuracy": 100.0 * right_pairs / max(1, len(complete)),
        "num_questions": n_q,
        "num_correct_questions": right_q,
        "num_pairs": len(complete),
        "num_correct_pairs": right_pairs,
        "incomplete_pairs": len(pairs) - len(complete),
        "unparsed": sum(p.get("parsed") is None for p in predictions),
        "unanswerable": sum(bool(p.get("error")) for p in predictions),
        "per_pattern": per_pattern,
    }
