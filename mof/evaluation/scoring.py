"""Reading an answer's letter, and MMVP scoring: question accuracy and pair accuracy (both questions of a pair right).

Two readers: `parse_response`, `mof`'s own (used by `scoring=mof` and `scoring=paper`), and `lmms_eval_letter`,
lmms-eval 0.7.3's `mmvp` task rule restated, so that `scoring=lmms_eval` gives its numbers exactly."""

from __future__ import annotations

import re
from collections import defaultdict

_OPTION = re.compile(r"\(([a-z])\)\s*([^()]*?)\s*(?=\([a-z]\)|$)", re.IGNORECASE)
_NEGATION = re.compile(r"(?:\bnot|n't|\bno|\brather than|\binstead of)\s+(?:the\s+|option\s+)?\W{0,2}$", re.IGNORECASE)
_OPEN, _CLOSE = r"(?:\(|\[|<|\*\*|\*)", r"(?:\)|\]|>|\*\*|\*)"   # (a) [a] <a> **a** *a*


def parse_options(options: str) -> dict[str, str]:
    """`(a) Standing (b) Sitting` -> {"a": "Standing", "b": "Sitting"}."""
    return {m.group(1).lower(): m.group(2).strip() for m in _OPTION.finditer(options)}


def _affirmed(matches, text: str) -> list[str]:
    """The letters (or option keys) of `matches` not negated just before ("not (a)", "rather than left")."""
    return list(dict.fromkeys(key for key, start in matches if not _NEGATION.search(text[max(0, start - 20):start])))


def parse_response(response: str, options: str) -> str | None:
    """The option letter a response picks, or None when it picks none or more than one. Reads `(a)`, `a`, `A.`,
    `**B**`, `<A>`, `[b]`, `The answer is (b) Sitting`, `option B`, a capital letter ending the answer ("I think it's
    B"), or the text of exactly one option that is not negated ("It is left, not right." is (a)); "Both (a) and (b)"
    picks none."""
    opts = parse_options(options)
    letters = "".join(opts) or "ab"
    text = response.strip()
    first_line = text.splitlines()[0].strip() if text else ""
    bare = re.fullmatch(rf"{_OPEN}?([{letters}]){_CLOSE}?[.):,]?", first_line, re.IGNORECASE)
    if bare:  # `a`, `(b)`, `**A**.` alone on the first line, whatever explanation follows
        return bare.group(1).lower()
    start = re.match(rf"(?:{_OPEN}([{letters}]){_CLOSE}|([{letters}])[.):,])", text, re.IGNORECASE)
    if start:  # `(a) ...`, `b) Sitting`, `A. Left`
        return (start.group(1) or start.group(2)).lower()
    for pattern in (rf"{_OPEN}([{letters}]){_CLOSE}",                       # ... (b) ... anywhere
                    rf"answer\s*(?:is|:)?\s*{_OPEN}?([{letters}])\b",         # The answer is b
                    rf"\boption\s*{_OPEN}?([{letters}])\b"):                  # option B
        found = _affirmed([(m.group(1).lower(), m.start()) for m in re.finditer(pattern, text, re.IGNORECASE)], text)
        if found:
            return found[0] if len(found) == 1 else None   # "Both (a) and (b)": no single answer
    upper = re.findall(rf"\b([{letters.upper()}])\b", text)   # case matters: "a cat" is not (a)
    if len(upper) == 1 and re.search(rf"(?:^|[\s:,])({upper[0]})[.!]?$", text):
        return upper[0].lower()                             # "I think it's B", "ASSISTANT: B"
    hits = _affirmed([(k, m.start()) for k, v in opts.items() if v
                      for m in re.finditer(rf"\b{re.escape(v)}\b", text, re.IGNORECASE)], text)
    return hits[0] if len(hits) == 1 else None


def lmms_eval_letter(response: str, options: str = "") -> str | None:
    """lmms-eval 0.7.3's MMVP reading (`tasks/mmvp/utils.py`, `_extract_answer_letter`), rule for rule: A or B by
    the first of five patterns that matches anywhere, else the first character. It reads "A dog is here" as (a) and
    misses `**B**`; `scoring=lmms_eval` keeps that, for numbers comparable with lmms-eval's."""
    text = response.strip()
    for pattern in (r"^\s*\(?([AB])\)?\.?\s*$", r"^\s*\(?([AB])\)?[\.\s]", r"answer\s+is\s+\(?([AB])\)?",
                    r"option\s+\(?([AB])\)?", r"\(?([AB])\)?(?:\s|$)"):
        m = re.search(pattern, text, flags=re.IGNORECASE)
        if m:
            return m.group(1).lower()
    return text[0].lower() if text and text[0].upper() in "AB" else None


READERS = {"mof": parse_response, "lmms_eval": lmms_eval_letter}


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
