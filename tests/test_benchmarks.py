"""Benchmarks as plug-ins: the registry, POPE (the original scoring, on a fixture in its published layout) and
MMVP per pattern under MMVP-VLM's names."""

import csv
import json

import pytest
from PIL import Image

from helpers import compose_cfg
from mof.errors import ConfigError
from mof.evaluation.benchmarks import BENCHMARKS, get_benchmark
from mof.data.patterns import PATTERNS
from mof.evaluation.benchmarks.base import BenchmarkFormatError
from mof.evaluation.benchmarks.mmvp import MMVP
from mof.evaluation.benchmarks.pope import POPE, pope_answer
from mof.evaluation.report import markdown
from mof.evaluation.run import rescore

# (split, label, response): the responses a model gave, and what the original evaluate.py makes of them
FIXTURE = [
    ("random", "yes", "Yes"), ("random", "yes", "No."), ("random", "no", "No, there is not."),
    ("random", "no", "Yes, there is a dog in the image."),
    ("popular", "yes", "Yes"), ("popular", "no", "Yes"), ("popular", "no", "There is no cat"), ("popular", "no", "No"),
]
# random: TP 1 FN 1 TN 1 FP 1 -> accuracy 50, precision 50, recall 50, F1 50, yes-ratio 50
# popular: TP 1 FP 1 TN 2 FN 0 -> accuracy 75, precision 50, recall 100, F1 66.67, yes-ratio 50 (labels: 25)
EXPECTED = {"random": (50.0, 50.0, 50.0, 50.0, 50.0), "popular": (75.0, 50.0, 100.0, 200 / 3, 50.0)}


def write_pope(root, image_root, rows=FIXTURE):
    """RUCAIBox/POPE's layout: JSON lines per split, COCO val2014 file names."""
    root.mkdir(parents=True, exist_ok=True)
    image_root.mkdir(parents=True, exist_ok=True)
    by_split = {}
    for k, (split, label, _) in enumerate(rows):
        image = f"COCO_val2014_{k:012d}.jpg"
        Image.new("RGB", (48, 32), (20 * k, 90, 40)).save(image_root / image)
        by_split.setdefault(split, []).append({"question_id": len(by_split.get(split, [])) + 1, "image": image,
                                               "text": f"Is there a thing {k} in the image?", "label": label})
    for split, questions in by_split.items():
        (root / f"coco_pope_{split}.json").write_text("\n".join(json.dumps(q) for q in questions) + "\n")
    return root


@pytest.mark.parametrize("response,expected", [
    ("Yes", "yes"), ("No", "no"), ("No.", "no"), ("no, it is not.", "no"), ("There is not a dog", "no"),
    ("Yes. No.", "yes"),              # the first sentence only
    ("Yes, no doubt", "no"),          # commas dropped, then any 'no' word
    ("I don't think so", "yes"),      # the original's word list: "don't" is not "not"
    ("NO", "yes"), ("Nope", "yes"), ("", "yes"), (None, None),
])
def test_pope_answers_read_as_the_original_evaluate_py(response, expected):
    assert pope_answer(response) == expected


def test_pope_fixture_metrics_by_hand_and_predicted_yes_ratio(tmp_path):
    root = write_pope(tmp_path / "pope", tmp_path / "val2014")
    bench = POPE({"root": root, "image_root": tmp_path / "val2014", "splits": ["random", "popular"]})
    items = bench.items()
    assert [i.fields["split"] for i in items] == [r[0] for r in FIXTURE]
    assert items[0].prompt.endswith("Answer the question using a single word or phrase.")
    assert items[0].image.is_file()
    predictions = [{**item.fields, "response": response, "error": None} for item, (_, _, response) in zip(items, FIXTURE)]
    f = tmp_path / "predictions.jsonl"
    f.write_text("\n".join(json.dumps(p) for p in predictions))
    results = rescore(bench, f, tmp_path / "out")
    for split, values in EXPECTED.items():
        got = results["per_split"][split]
        assert [got[m] for m in ("accuracy", "precision", "recall", "f1", "yes_ratio")] == pytest.approx(values)
    assert results["f1"] == pytest.approx((50 + 200 / 3) / 2) and results["yes_ratio"] == 50.0
    assert results["primary_metric"] == "f1" and results["metric_names"][0] == "f1"
    header = (tmp_path / "out" / "report.md").read_text().splitlines()[0]
    assert "| f1 | accuracy | precision | recall | yes ratio |" in header
    assert results["per_split"]["popular"]["tp"] == 1 and results["per_split"]["popular"]["tn"] == 2


def test_pope_end_to_end_through_evaluate_py(tmp_path):
    import torch

    from mof import MofForConditionalGeneration, tiny_config
    from mof.data import MofImageProcessor, load_tokenizer
    from mof.evaluation.entry import evaluate

    torch.manual_seed(0)
    export = tmp_path / "export"
    config = tiny_config(fusion="interleaved", vocab_size=544)
    MofForConditionalGeneration(config).save_pretrained(export)
    load_tokenizer("tiny").save_pretrained(export)
    MofImageProcessor.from_model_config(config).save_pretrained(export)
    root = write_pope(tmp_path / "pope", tmp_path / "val2014")
    (tmp_path / "val2014" / "COCO_val2014_000000000007.jpg").write_bytes(b"not a jpeg")  # unanswerable: wrong
    cfg = compose_cfg("evaluate", tmp_path / "run", tmp_path, [
        "benchmark=pope", f"benchmark.root={root}", f"benchmark.image_root={tmp_path / 'val2014'}",
        "benchmark.splits=[random,popular]", f"checkpoint={export}", "device=cpu", "benchmark.batch_size=3"])
    results = evaluate(cfg)
    lines = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and results["num_questions"] == 8 and results["unanswerable"] == 1
    assert lines[7]["error"] and lines[7]["correct"] is False
    assert all(p["parsed"] in ("yes", "no") for p in lines[:7])
    by_hand = sum(p["correct"] for p in lines if p["split"] == "random") / 4 * 100
    assert results["per_split"]["random"]["accuracy"] == pytest.approx(by_hand)


def test_bad_pope_files_name_the_line(tmp_path):
    root = write_pope(tmp_path / "pope", tmp_path / "img")
    with open(root / "coco_pope_random.json", "a") as f:
        f.write('{"question_id": 9, "image": "x.jpg", "text": "Is there a cat?", "label": "maybe"}\n')
    with pytest.raises(BenchmarkFormatError, match=r"coco_pope_random.json:5: expected \{question_id, image, text, label"):
        POPE({"root": root, "splits": ["random"]}).items()
    with pytest.raises(BenchmarkFormatError, match="no coco_pope_adversarial.json"):
        POPE({"root": root, "splits": ["adversarial"]}).items()
    with pytest.raises(BenchmarkFormatError, match="unknown \\['hard'\\]"):
        POPE({"root": root, "splits": ["hard"]}).items()


def test_registry_lists_the_known_benchmarks(tmp_path):
    assert set(BENCHMARKS) == {"mmvp", "synthetic", "mmvp_vlm", "pope", "synthetic_pope", "synthetic_vlm"}
    for name, cls in BENCHMARKS.items():
        assert cls.primary_metric == cls.metric_names[0] and get_benchmark(name) is cls
    with pytest.raises(ValueError, match="unknown benchmark 'gqa'; known: mmvp, synthetic, mmvp_vlm, pope, synthetic_pope, synthetic_vlm"):
        get_benchmark("gqa")
    with pytest.raises(ValueError, match=r"unknown benchmark 'mmvpp' \(did you mean 'mmvp'\?\); known: "):
        get_benchmark("mmvpp")
    cfg = compose_cfg("evaluate", tmp_path / "run", tmp_path, ["benchmark.name=gqa", "checkpoint=x"])
    from mof.evaluation.entry import evaluate

    with pytest.raises(ConfigError, match="known: mmvp, synthetic, mmvp_vlm, pope, synthetic_pope, synthetic_vlm"):
        evaluate(cfg)


def _mmvp(root, n=4, pattern=None):
    (root / "MMVP Images").mkdir(parents=True)
    with open(root / "Questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Index", "Question", "Options", "Correct Answer"] + (["Pattern"] if pattern else []))
        for i in range(1, n + 1):
            w.writerow([i, "Is the door open?", "(a) Open (b) Closed", "(a)" if i % 2 else "(b)"]
                       + ([pattern[(i - 1) // 2]] if pattern else []))
    return root


def test_mmvp_per_pattern_from_a_mapping_file_in_mmvp_vlm_names(tmp_path):
    root = _mmvp(tmp_path / "mmvp")
    mapping = tmp_path / "patterns.csv"
    mapping.write_text("Index,Pattern\n1,state and condition\n2,State and Condition\n3,Text\n4,Texts\n")
    bench = MMVP({"root": root, "patterns": str(mapping)})
    assert [i.fields["pattern"] for i in bench.items()] == ["State and Condition"] * 2 + ["Texts"] * 2
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps({"index": i, "response": r}) for i, r in enumerate(["a", "b", "a", "a"], 1)))
    results = rescore(bench, f, tmp_path / "out")
    assert results["per_pattern"]["State and Condition"]["pair_accuracy"] == 100.0
    assert results["per_pattern"]["Texts"]["pair_accuracy"] == 0.0
    assert set(results["per_pattern"]) <= set(PATTERNS)
    mapping.write_text("Index,Pattern\n1,Shininess\n")
    with pytest.raises(BenchmarkFormatError, match=r"patterns.csv:2: unknown pattern 'Shininess'; expected one of"):
        MMVP({"root": root, "patterns": str(mapping)}).items()
    mapping.write_text("Index,Pattern\n1,Texts\n2,Quantity and Count\n")
    with pytest.raises(BenchmarkFormatError, match="questions 1 and 2 form a pair but have the patterns"):
        MMVP({"root": root, "patterns": str(mapping)}).items()


def test_mmvp_pattern_column_names_line_up_with_mmvp_vlm(tmp_path):
    root = _mmvp(tmp_path / "mmvp", pattern=["structural and physical characteristics", "my own pattern"])
    patterns = [i.fields["pattern"] for i in MMVP({"root": root}).items()]
    assert patterns == ["Structural Characteristics"] * 2 + ["my own pattern"] * 2


def test_report_reads_metric_names_from_the_results():
    mmvp = {"benchmark": "mmvp", "name": "m", "primary_metric": "pair_accuracy",
            "metric_names": ["pair_accuracy", "question_accuracy"], "pair_accuracy": 40.0, "question_accuracy": 60.0}
    pope = {"benchmark": "pope", "name": "p", "primary_metric": "f1", "metric_names": ["f1", "accuracy"],
            "f1": 81.5, "accuracy": 80.0}
    table = markdown([mmvp, pope])
    assert "| pair accuracy | question accuracy | f1 | accuracy |" in table
    assert "| m | mmvp | 40.0 | 60.0 | - | - |" in table and "| p | pope | - | - | 81.5 | 80.0 |" in table


def _results(folder, benchmark, scores, vlm=False):
    folder.mkdir(parents=True)
    if vlm:  # MMVP-VLM names its patterns by image folder, with the category beside
        per = {str(k): {"pair_accuracy": s, "category": p} for k, (p, s) in enumerate(zip(PATTERNS, scores))}
    else:
        per = {p: {"pair_accuracy": s} for p, s in zip(PATTERNS, scores)}
    (folder / "results.json").write_text(json.dumps({"benchmark": benchmark, "per_pattern": per}))
    return folder


def test_clip_vs_mllm_correlation_per_pair(tmp_path):
    from mof.report import main as report

    base = [10.0, 20, 30, 40, 50, 60, 70, 80, 90]
    clip = _results(tmp_path / "clip", "mmvp_vlm", base, vlm=True)
    same = _results(tmp_path / "llava", "mmvp", [2 * s + 5 for s in base])   # r = 1
    opposite = _results(tmp_path / "other", "mmvp", base[::-1])              # r = -1
    out = report(["correlate", "--clip", str(clip), "--mllm", str(same), str(opposite), "--out", str(tmp_path / "r")])
    rs = {row["mllm"]: row["pearson_r"] for row in out["pairs"]}
    assert rs["llava"] == pytest.approx(1.0) and rs["other"] == pytest.approx(-1.0)
    assert all(row["patterns"] == 9 for row in out["pairs"])
    assert "| clip | llava | 1.000 | 9 |" in (tmp_path / "r" / "correlation.md").read_text()
    assert (tmp_path / "r" / "correlation.png").stat().st_size > 1000


def test_synthetic_pope_split_is_balanced_in_the_pope_layout(tmp_path):
    from mof.evaluation.benchmarks.pope import read_split
    from mof.evaluation.benchmarks.synthetic_pope import SyntheticPOPE, synthetic_pope_root

    root = synthetic_pope_root(tmp_path, pairs_per_pattern=2)
    questions = read_split(root / "coco_pope_random.json")
    assert len(questions) == 6 * 2 * 2 * 2  # 6 patterns with named objects, 2 pairs, 2 images, a yes and a no each
    by_image = {}
    for q in questions:
        by_image.setdefault(q["image"], []).append(q["label"])
        assert (root / "images" / q["image"]).is_file()
    assert all(sorted(labels) == ["no", "yes"] for labels in by_image.values())
    items = SyntheticPOPE({"synthetic": {"pairs_per_pattern": 2}}, tmp_path).items()
    assert [i.fields["question"] for i in items] == [q["text"] for q in questions]
    assert items[0].fields["question"] == "Is there an arrow in the image?" and items[0].fields["label"] == "yes"
