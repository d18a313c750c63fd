"""mof as an lmms-eval model: lmms-eval's own CLI finds it by its entry point and runs a local MMVP-style task on a
briefly trained tiny export; its scores and every response equal evaluate.py's on the same items."""

import csv
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, run_script, train_cfg
from mof.training.run import train

pytest.importorskip("lmms_eval")  # installed by setup.sh (`pip install --no-deps lmms-eval`)

TASK = """task: mmvp_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
process_results: !function utils.process_results
metric_list:
  - metric: question_accuracy
    aggregation: !function utils.question_accuracy
    higher_is_better: true
  - metric: pair_accuracy
    aggregation: !function utils.pair_accuracy
    higher_is_better: true
generation_kwargs:
  max_new_tokens: 12
  do_sample: false
"""

UTILS = '''from PIL import Image

from mof.data.prompts import MCQ_INSTRUCTION, format_mcq_prompt
from mof.evaluation.scoring import parse_response


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return format_mcq_prompt(doc["question"], doc["options"], MCQ_INSTRUCTION)


def process_results(doc, results):
    parsed = parse_response(results[0], doc["options"])
    row = {"index": doc["index"], "correct": parsed is not None and f"({parsed})" == doc["answer"]}
    return {"question_accuracy": row, "pair_accuracy": row}


def question_accuracy(rows):
    return 100.0 * sum(r["correct"] for r in rows) / len(rows)


def pair_accuracy(rows):
    pairs = {}
    for r in rows:
        pairs.setdefault((r["index"] - 1) // 2, []).append(r["correct"])
    return 100.0 * sum(all(v) for v in pairs.values()) / len(pairs)
'''


def test_lmms_eval_runs_a_mof_export_and_agrees_with_evaluate_py(tmp_path, data_dir):
    from mof.evaluation.benchmarks.synthetic import synthetic_benchmark_root

    # 2 steps at 2e-3 are enough to answer with letters (the preset's own rate may change: 1e-3 in 2 steps is not)
    train(train_cfg(tmp_path / "run", data_dir, ["trainer.max_steps=2", "model.lr=2e-3"]))
    export = tmp_path / "run" / "export"
    root = synthetic_benchmark_root(data_dir, pairs_per_pattern=2)
    run_script(["evaluate.py", "benchmark=mmvp", f"benchmark.root={root}", f"checkpoint={export}", "device=cpu",
                f"hydra.run.dir={tmp_path / 'ours'}"])
    ours = json.loads((tmp_path / "ours" / "results.json").read_text())
    responses = [json.loads(x)["response"] for x in (tmp_path / "ours" / "predictions.jsonl").read_text().splitlines()]

    items = tmp_path / "items.jsonl"
    with open(root / "Questions.csv", newline="") as f, open(items, "w") as out:
        for row in csv.DictReader(f):
            out.write(json.dumps({"index": int(row["Index"]), "question": row["Question"], "options": row["Options"],
                                  "answer": row["Correct Answer"],
                                  "image": str(root / "MMVP Images" / f"{row['Index']}.jpg")}) + "\n")
    task = tmp_path / "task"
    task.mkdir()
    (task / "mmvp_local.yaml").write_text(TASK.format(items=items))
    (task / "utils.py").write_text(UTILS)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "mof", "--model_args", f"pretrained={export}",
                           "--tasks", "mmvp_local", "--include_path", str(task), "--batch_size", "8",
                           "--output_path", str(tmp_path / "lmms"), "--log_samples"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reported = json.loads(sorted((tmp_path / "lmms").rglob("*_results.json"))[-1].read_text())["results"]["mmvp_local"]
    samples = [json.loads(x) for x in next((tmp_path / "lmms").rglob("*_samples_mmvp_local.jsonl")).read_text().splitlines()]
    assert [s["filtered_resps"] for s in sorted(samples, key=lambda s: s["doc_id"])] == responses
    assert reported["question_accuracy,none"] == pytest.approx(ours["question_accuracy"])
    assert reported["pair_accuracy,none"] == pytest.approx(ours["pair_accuracy"])
    assert ours["question_accuracy"] > 0  # the comparison is not of two zeros
    print(f"lmms-eval: question accuracy {reported['question_accuracy,none']}, pair accuracy "
          f"{reported['pair_accuracy,none']}; evaluate.py: {ours['question_accuracy']}, {ours['pair_accuracy']}")
