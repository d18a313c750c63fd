import csv
import json

import pytest
import torch
from PIL import Image

from helpers import compose_cfg, run_script
from mof import MofForConditionalGeneration, tiny_config
from mof.data import MofImageProcessor, load_tokenizer
from mof.evaluation.benchmarks.base import BenchmarkFormatError
from mof.evaluation.benchmarks.mmvp import MMVP, load_mmvp
from mof.evaluation.benchmarks.mmvp_vlm import evaluate_vlm
from mof.evaluation.report import main as report_main
from mof.evaluation.report import pearson
from mof.evaluation.run import rescore
from mof.evaluation.scoring import parse_options, parse_response, score


@pytest.mark.parametrize("response,expected", [
    ("(a)", "a"), ("a", "a"), ("A.", "a"), ("B", "b"), ("b) Sitting", "b"),
    ("The answer is (b) Sitting", "b"), ("The answer is b.", "b"), ("Option B", "b"),
    ("Sitting", "b"), ("the person is standing", "a"),
    ("a\n\nExplanation: the person stands on (b) a box", "a"), ("(b)\nBecause", "b"),
    ("A dog is here", None), ("I cannot tell", None), ("Standing or sitting", None), ("", None),
])
def test_parse_response(response, expected):
    assert parse_response(response, "(a) Standing (b) Sitting") == expected


def test_parse_options():
    assert parse_options("(a) Standing (b) Sitting") == {"a": "Standing", "b": "Sitting"}
    assert parse_options("(a) Close up (b) Far away") == {"a": "Close up", "b": "Far away"}


def test_pair_accuracy_by_hand():
    # pair 1: both right; pair 2: one right; pair 3: both wrong -> 3/6 questions, 1/3 pairs
    preds = [{"index": i, "correct": c, "parsed": "a", "pattern": p} for i, c, p in
             [(1, True, "x"), (2, True, "x"), (3, True, "y"), (4, False, "y"), (5, False, "y"), (6, False, "y")]]
    preds[5]["parsed"] = None
    s = score(preds)
    assert s["question_accuracy"] == 50.0 and s["pair_accuracy"] == pytest.approx(100 / 3)
    assert (s["num_pairs"], s["num_correct_pairs"], s["unparsed"]) == (3, 1, 1)
    assert s["per_pattern"]["x"]["pair_accuracy"] == 100.0 and s["per_pattern"]["y"]["pair_accuracy"] == 0.0


def write_mmvp(root, rows, with_images=True, pattern=False):
    root.mkdir(parents=True, exist_ok=True)
    (root / "MMVP Images").mkdir(exist_ok=True)
    with open(root / "Questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Index", "Question", "Options", "Correct Answer"] + (["Pattern"] if pattern else []))
        for r in rows:
            w.writerow(r)
    if with_images:
        for r in rows:
            Image.new("RGB", (50, 40), (10 * int(r[0]), 80, 80)).save(root / "MMVP Images" / f"{r[0]}.jpg")
    return root


def published_rows(n=300):
    """Rows 1..n; as in the published file, 99/100 and 279/280 carry the labels lmms-eval swaps."""
    return [[i, "Is the person standing?", "(a) Standing (b) Sitting", "(a)" if i % 2 else "(b)"] for i in range(1, n + 1)]


def test_corrections_are_off_by_default_and_match_lmms_eval(tmp_path):
    root = write_mmvp(tmp_path / "mmvp", published_rows(), with_images=False)
    questions, applied = load_mmvp(root)
    assert applied == {} and questions[99].answer == "(b)"
    questions, applied = load_mmvp(root, corrections="lmms_eval")
    assert sorted(applied) == [99, 100, 279, 280] and applied[100][:2] == ["(b)", "(a)"] and "lmms-eval" in applied[100][2]
    assert [questions[i - 1].answer for i in (99, 100, 279, 280)] == ["(b)", "(a)", "(b)", "(a)"]
    pairs = {(questions[i].answer, questions[i + 1].answer) for i in range(0, 300, 2)}
    assert all(a != b for a, b in pairs)  # every pair keeps opposite answers
    with pytest.raises(BenchmarkFormatError, match="benchmark.corrections: expected one of none, lmms_eval"):
        load_mmvp(root, corrections="yes")


def test_rescoring_parses_every_response_again(tmp_path):
    options = "(a) Standing (b) Sitting"
    preds = [{"index": 99, "answer": "(a)", "options": options, "response": "b\n\nExplanation: the person sits",
              "parsed": None, "correct": False},
             {"index": 100, "answer": "(b)", "options": options, "response": "The answer is (a) Standing",
              "parsed": "b", "correct": True}]
    f = tmp_path / "predictions.jsonl"
    f.write_text("\n".join(json.dumps(p) for p in preds))
    plain = rescore(MMVP({}), f, tmp_path / "plain")
    fixed = rescore(MMVP({"corrections": "lmms_eval"}), f, tmp_path / "fixed")
    assert plain["pair_accuracy"] == 0.0 and plain["num_correct_questions"] == 0  # stored parsed/correct ignored
    assert fixed["pair_accuracy"] == 100.0 and fixed["corrections"] == "lmms_eval"
    assert json.loads((tmp_path / "fixed" / "results.json").read_text())["pair_accuracy"] == 100.0


def test_rescoring_another_tools_predictions_with_the_benchmark(tmp_path):
    root = write_mmvp(tmp_path / "mmvp", published_rows(4), with_images=False)
    f = tmp_path / "other.jsonl"
    f.write_text("\n".join(json.dumps({"index": i, "response": r}) for i, r in enumerate(["A", "(b) Sitting", "a", "c"], 1)))
    results = rescore(MMVP({"root": root}), f, tmp_path / "out")
    assert results["num_correct_questions"] == 3 and results["pair_accuracy"] == 50.0 and results["unparsed"] == 1
    with pytest.raises(BenchmarkFormatError, match="set benchmark.root"):
        rescore(MMVP({}), f, tmp_path / "out2")
    f.write_text('{"index": 1, "response": "a"}\nnot json\n')
    with pytest.raises(BenchmarkFormatError, match=r"other.jsonl:2: not valid JSON"):
        rescore(MMVP({"root": root}), f, tmp_path / "out3")


def test_bad_benchmark_folders_give_clear_errors(tmp_path):
    with pytest.raises(BenchmarkFormatError, match=r"(?s)no Questions.csv.*MMVP Images/<Index>.jpg.*MMVP/MMVP"):
        load_mmvp(tmp_path / "nowhere")
    root = tmp_path / "bad"
    root.mkdir()
    (root / "MMVP Images").mkdir()
    (root / "Questions.csv").write_text("Index,Prompt,Choices,Answer\n1,a,b,c\n")
    with pytest.raises(BenchmarkFormatError, match=r"missing columns \['Question', 'Options', 'Correct Answer'\]"):
        load_mmvp(root)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("export")
    config = tiny_config(fusion="interleaved", vocab_size=544)
    MofForConditionalGeneration(config).save_pretrained(out)
    load_tokenizer("tiny").save_pretrained(out)
    MofImageProcessor.from_model_config(config).save_pretrained(out)
    return out


def test_end_to_end_evaluation_of_tiny_export(tmp_path, tiny_export):
    rows = [[i, "Which way is the arrow pointing?", "(a) Left (b) Right", "(a)" if i % 2 else "(b)"] for i in range(1, 7)]
    root = write_mmvp(tmp_path / "mmvp", rows)
    (root / "MMVP Images" / "6.jpg").write_bytes(b"not a jpeg")  # unreadable: unanswerable, run goes on
    cfg = compose_cfg("evaluate", tmp_path / "run", tmp_path, ["benchmark=mmvp", f"benchmark.root={root}",
                                                                f"checkpoint={tiny_export}", "device=cpu",
                                                                "benchmark.batch_size=2"])
    from mof.evaluation.entry import evaluate

    results = evaluate(cfg)
    for key in ("benchmark", "checkpoint", "question_accuracy", "pair_accuracy", "num_questions", "num_pairs",
                "unparsed", "per_pattern"):
        assert key in results
    assert results["num_questions"] == 6 and results["num_pairs"] == 3 and results["unanswerable"] == 1
    lines = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert [p["index"] for p in lines] == [1, 2, 3, 4, 5, 6]
    assert {"index", "question", "options", "answer", "response", "parsed", "correct"} <= set(lines[0])
    assert lines[5]["error"] and lines[5]["correct"] is False
    # batched greedy decoding gives the same answers as one question at a time
    cfg1 = compose_cfg("evaluate", tmp_path / "run1", tmp_path, ["benchmark=mmvp", f"benchmark.root={root}",
                                                                  f"checkpoint={tiny_export}", "device=cpu",
                                                                  "benchmark.batch_size=1"])
    evaluate(cfg1)
    lines1 = [json.loads(x) for x in (tmp_path / "run1" / "predictions.jsonl").read_text().splitlines()]
    assert [p["response"] for p in lines1] == [p["response"] for p in lines]
    assert (tmp_path / "run" / "report.md").exists()


def test_evaluate_cli_synthetic_default_and_lightning_checkpoint(tmp_path, data_dir):
    from helpers import train_cfg
    from mof.training.run import train

    train(train_cfg(tmp_path / "train", data_dir, ["trainer.max_steps=2", "export=false"]))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    proc = run_script(["evaluate.py", f"checkpoint={ckpt}", f"paths.data_dir={data_dir}",
                       "benchmark.synthetic.pairs_per_pattern=2",
f"hydra.run.dir={tmp_path / 'ev'}"])
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["benchmark"] == "synthetic" and results["num_pairs"] == 18 and len(results["per_pattern"]) == 9
    assert (tmp_path / "ev" / "per_pattern.png").stat().st_size > 1000
    assert "pair accuracy" in proc.stdout


def test_llava_checkpoint_evaluates_through_the_same_path(tmp_path, tiny_llava):
    llava, path = tiny_llava
    load_tokenizer("tiny").save_pretrained(path)
    rows = [[i, "Which way?", "(a) Left (b) Right", "(a)" if i % 2 else "(b)"] for i in range(1, 5)]
    root = write_mmvp(tmp_path / "mmvp", rows)
    cfg = compose_cfg("evaluate", tmp_path / "run", tmp_path, ["benchmark=mmvp", f"benchmark.root={root}",
                                                                f"checkpoint={path}", "device=cpu"])
    from mof.evaluation.entry import evaluate

    assert evaluate(cfg)["num_questions"] == 4


def write_vlm(root, n_types=2):
    (root / "MMVP_VLM_Images").mkdir(parents=True)
    rows, qid = [], 1
    for t in range(n_types):
        kind = f"Pattern {t}"
        (root / "MMVP_VLM_Images" / kind).mkdir()
        for _ in range(2):  # two pairs per pattern
            for s in ("a red square", "a blue circle"):
                Image.new("RGB", (40, 40), (200 if "red" in s else 20, 30, 200 if "blue" in s else 20)).save(
                    root / "MMVP_VLM_Images" / kind / f"{qid}.jpg")
                rows.append([qid, kind, s])
                qid += 1
    with open(root / "Questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Question ID", "Type", "Statement"])
        w.writerows(rows)
    return root


def test_mmvp_vlm_with_tiny_random_clip(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                     "num_attention_heads": 4, "vocab_size": 544, "max_position_embeddings": 64},
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    model_dir = tmp_path / "clip"
    CLIPModel(config).save_pretrained(model_dir)
    load_tokenizer("tiny").save_pretrained(model_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(model_dir)
    root = write_vlm(tmp_path / "vlm")
    results = evaluate_vlm(str(model_dir), root, tmp_path / "out")
    assert results["num_pairs"] == 4 and set(results["per_pattern"]) == {"Pattern 0", "Pattern 1"}
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    for p in lines:  # a pair is right exactly when each statement picks its own image
        assert p["correct"] == (p["picks"] == [0, 1])
    expected = sum(p["correct"] for p in lines[:2]) * 50.0
    assert results["per_pattern"]["Pattern 0"]["pair_accuracy"] == expected


def test_mmvp_vlm_accepts_original_folder_name(tmp_path):
    from mof.evaluation.benchmarks.mmvp_vlm import load_vlm_questions

    root = write_vlm(tmp_path / "vlm", 1)
    (root / "MMVP_VLM_Images").rename(root / "MLLM_VLM Images")
    questions, image_dir = load_vlm_questions(root)
    assert image_dir.name == "MLLM_VLM Images" and len(questions) == 4


def test_report_merges_runs_and_correlates(tmp_path, capsys):
    for name, scores in (("clip", [10, 50, 90]), ("mllm", [20, 40, 100])):
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(json.dumps({
            "benchmark": "mmvp_vlm", "checkpoint": name, "pair_accuracy": sum(scores) / 3, "num_pairs": 6,
            "per_pattern": {f"p{i}": {"pair_accuracy": s, "pairs": 2, "correct_pairs": 1} for i, s in enumerate(scores)}}))
    report_main([str(tmp_path / "clip"), str(tmp_path / "mllm"), "--out", str(tmp_path / "rep")])
    text = (tmp_path / "rep" / "report.md").read_text()
    r = pearson([10, 50, 90], [20, 40, 100])
    assert f"{r:.3f}" in text and "| clip |" in text and "| mllm |" in text
    assert (tmp_path / "rep" / "per_pattern.png").stat().st_size > 1000
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_results_go_to_wandb_offline(tmp_path, monkeypatch):
    from mof.evaluation.wandb_log import log_results

    monkeypatch.setenv("WANDB_MODE", "offline")
    rows = [[i, "Which way?", "(a) Left (b) Right", "(a)" if i % 2 else "(b)"] for i in range(1, 3)]
    root = write_mmvp(tmp_path / "mmvp", rows)
    preds = [{"index": i, "question": "Which way?", "options": "(a) Left (b) Right", "answer": "(a)", "response": "(a)",
              "parsed": "a", "correct": i == 1} for i in (1, 2)]
    (tmp_path / "predictions.jsonl").write_text("\n".join(json.dumps(p) for p in preds))
    results = {"benchmark": "mmvp", "root": str(root), "pair_accuracy": 0.0, "question_accuracy": 50.0,
               "per_pattern": {}}
    log_results(results, tmp_path, "eval-test")
    runs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert runs and runs[0].stat().st_size > 0
    media = list(tmp_path.glob("wandb/offline-run-*/files/media/**/*.*"))
    assert media  # the prediction table's images were written


def test_figures_name_a_run_by_its_folder_and_title_its_score(tmp_path, monkeypatch):
    """Before: `per_pattern.png` was labelled `export` (the folder every run exports to), with no title."""
    import matplotlib.axes

    from mof.evaluation.report import _label, plot

    assert _label({"checkpoint": "/runs/amof-0.25/export"}) == "amof-0.25"
    assert _label({"rescored_from": "/runs/r1/predictions.jsonl"}) == "r1"
    assert _label({"name": "given", "checkpoint": "/x/export"}) == "given"
    titles = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, text, **kw: titles.append(text))
    result = {"checkpoint": "/runs/r1/export", "benchmark": "synthetic", "metric_names": ["pair_accuracy"],
              "pair_accuracy": 40.0, "degenerate": "every answer was 'a'", "per_pattern": {"Texts": {"pair_accuracy": 40.0}}}
    plot([result], tmp_path / "p.png")
    assert titles == ["r1 on synthetic: pair accuracy 40.0%\n(every answer was 'a')"]


def test_reports_name_runs_by_their_overrides_and_show_the_seeds_spread(tmp_path, monkeypatch):
    import matplotlib.axes

    from mof.evaluation.report import _label, markdown, plot

    results = []
    for seed, value in ((0, 40.0), (1, 50.0), (2, 60.0)):
        run = tmp_path / f"2026-11-28_10-0{seed}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(
            f"- mof=interleaved\n- seed={seed}\n- hydra.run.dir=/x\n- logger=csv\n- paths.data_dir=${{oc.env:HOME}}\n")
        results.append({"checkpoint": str(run / "export"), "benchmark": "synthetic", "metric_names": ["pair_accuracy"],
                        "pair_accuracy": value, "per_pattern": {"Texts": {"pair_accuracy": value}}})
    assert _label(results[1]) == "mof=interleaved seed=1"            # not the folder's timestamp; no path, no env
    table = markdown(results)
    assert "| mof=interleaved (mean ± std, 3 seeds) | synthetic | 50.0 ± 10.0 |" in table   # by hand: sd of 40, 50, 60
    bars = []
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", lambda self, x, h, w, yerr=None, **kw: bars.append((list(h), yerr)))
    plot(results, tmp_path / "p.png")
    assert bars == [([50.0], [10.0])]
