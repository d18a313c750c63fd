"""POPE (Li et al., EMNLP 2023) as RUCAIBox/POPE publishes it: `coco_pope_{random,popular,adversarial}.json`, JSON
lines `{"question_id", "image", "text", "label"}`, images from a COCO val2014 folder. Scored exactly as the
original `evaluate.py`: the first sentence of the response, commas dropped, split on spaces; "no" if the words
hold `No`, `not` or `no`, else "yes". Yes-ratio is the share of *predicted* yes (lmms-eval's task computes it from
the labels, where it is always 0.5). A question whose image cannot be read counts as answered wrongly."""

from __future__ import annotations

from pathlib import Path

from ...data.prompts import instruction, with_instruction
from .base import Benchmark, BenchmarkFormatError, Item, json_lines

SPLITS = ("random", "popular", "adversarial")
LAYOUT = ("expected: ROOT/coco_pope_{random,popular,adversarial}.json (JSON lines with question_id, image, text, "
          "label) from RUCAIBox/POPE (output/coco/), and IMAGE_ROOT holding COCO val2014's images")


def pope_answer(response: str | None) -> str | None:
    """The original evaluate.py's reading of a response: "yes" or "no" (None: no response)."""
    if response is None:
        return None
    text = response
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_metrics(predictions: list[dict]) -> dict:
    """Accuracy, precision, recall, F1 (in %), yes-ratio (predicted yes / all) and the counts."""
    tp = sum(p["parsed"] == "yes" and p["label"] == "yes" for p in predictions)
    tn = sum(p["parsed"] == "no" and p["label"] == "no" for p in predictions)
    fp = sum(p["label"] == "no" and p["parsed"] != "no" for p in predictions)   # unanswerable: wrong
    fn = sum(p["label"] == "yes" and p["parsed"] != "yes" for p in predictions)
    n = len(predictions)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": 100.0 * (tp + tn) / max(1, n), "precision": 100.0 * precision, "recall": 100.0 * recall,
            "f1": 100.0 * f1, "yes_ratio": 100.0 * sum(p["parsed"] == "yes" for p in predictions) / max(1, n),
            "num_questions": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def read_split(path: Path) -> list[dict]:
    out = []
    for line_no, q in json_lines(path, "question"):
        if (not isinstance(q, dict) or not isinstance(q.get("image"), str) or not isinstance(q.get("text"), str)
                or q.get("label") not in ("yes", "no")):
            raise BenchmarkFormatError(f"{path}:{line_no}: expected {{question_id, image, text, label: yes|no}}, got "
                                       f"{str(q)[:120]}")
        out.append(q)
    return out


class POPE(Benchmark):
    """`benchmark=pope`: `root` (the question files), `image_root` (COCO val2014), `splits`, `prompt`
    (`llava15`: LLaVA-1.5's short-answer instruction; `bare`: the question alone; or any text)."""

    name = "pope"
    primary_metric = "f1"
    metric_names = ("f1", "accuracy", "precision", "recall", "yes_ratio")

    def splits(self) -> list[str]:
        splits = self.section["splits"]
        if not isinstance(splits, list) or not splits:
            raise BenchmarkFormatError(f"benchmark.splits: expected some of {', '.join(SPLITS)}, got {splits!r}")
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise BenchmarkFormatError(f"benchmark.splits: unknown {unknown}; expected some of {', '.join(SPLITS)}")
        return splits

    def items(self) -> list[Item]:
        root, image_root = Path(self.section["root"]), Path(self.section.get("image_root") or self.section["root"])
        prompt = self.section["prompt"]
        suffix = instruction(prompt, "short_answer")
        items = []
        for split in self.splits():
            path = root / f"coco_pope_{split}.json"
            if not path.is_file():
                raise BenchmarkFormatError(f"POPE: no {path.name} in {root}\n{LAYOUT}")
            for q in read_split(path):
                items.append(Item(len(items) + 1, image_root / q["image"], with_instruction(q["text"], suffix),
                                  {"index": len(items) + 1, "split": split, "question_id": q.get("question_id"),
                                   "image": q["image"], "question": q["text"], "label": q["label"]}))
        return items

    def judge(self, p: dict) -> dict:
        parsed = pope_answer(p.get("response"))
        return {**p, "parsed": parsed, "correct": parsed == p["label"]}

    def score(self, predictions: list[dict]) -> dict:
        per_split = {}
        for split in dict.fromkeys(p["split"] for p in predictions):
            per_split[split] = pope_metrics([p for p in predictions if p["split"] == split])
        averaged = {m: sum(s[m] for s in per_split.values()) / max(1, len(per_split)) for m in self.metric_names}
        return {**averaged, "num_questions": len(predictions), "per_split": per_split,
                "unanswerable": sum(bool(p.get("error")) for p in predictions)}

    def complete(self, predictions: list[dict], source: Path) -> list[dict]:
        """Every prediction labelled and of a split asked for, and every split asked for answered: a benchmark of
        three splits is never reported from one."""
        for p in predictions:
            if p.get("label") not in ("yes", "no") or "split" not in p:
                raise BenchmarkFormatError(f"{source}: prediction {p.get('index')} lacks its split or label (yes|no)")
        asked, present = self.splits(), list(dict.fromkeys(p["split"] for p in predictions))
        extra = [s for s in present if s not in asked]
        if extra:
            raise BenchmarkFormatError(f"{source}: predictions of split(s) {', '.join(map(str, extra))}, which "
                                       f"benchmark.splits ({', '.join(asked)}) does not ask for")
        missing = [s for s in asked if s not in present]
        if missing:
            raise BenchmarkFormatError(f"{source}: no predictions of split(s) {', '.join(missing)}; score the splits "
                                       f"it holds with benchmark.splits=[{','.join(present)}]")
        return predictions

    def question_id(self, fields: dict):
        return fields["split"], str(fields["question_id"])

    def answer_id(self, row: dict, source: Path):
        """`(split, question_id)`: the split from the line (`category`, `split`) or the one split asked for."""
        split, splits = row.get("split"), self.splits()
        if split is None:
            if len(splits) != 1:
                raise BenchmarkFormatError(
                    f"{source}:{row['line']}: question {row['id']} names no split (no 'category'); POPE's split files "
                    "number their questions alike, so score one split's answers at a time: benchmark.splits=[random]")
            split = splits[0]
        return str(split), str(row["id"])

    def describe(self) -> dict:
        return {"root": str(self.section.get("root")), "image_root": str(self.section.get("image_root")),
                "splits": self.splits(), "prompt": self.section["prompt"]}
