"""MMVP scored three ways (`benchmark.scoring`), and answer files of other tools re-scored.

The lmms-eval mode is checked against lmms-eval's own scorer (`lmms_eval.tasks.mmvp.utils`, installed by setup.sh)
on 160 varied responses (`fixtures/mmvp_responses.jsonl`); the other expectations are written by hand."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mof.evaluation.benchmarks.base import BenchmarkFormatError
from mof.evaluation.benchmarks.mmvp import MMVP
from mof.evaluation.benchmarks.pope import POPE
from mof.evaluation.report import ReportError, comparable
from mof.evaluation.run import rescore
from mof.evaluation.scoring import parse_response
from test_benchmarks import write_pope
from test_evaluation import published_rows, write_mmvp

FIXTURE = Path(__file__).parent / "fixtures" / "mmvp_responses.jsonl"
LMMS_EVAL_POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."  # its mmvp yaml


def fixture():
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    return rows


def fixture_benchmark(tmp_path):
    rows = fixture()
    root = write_mmvp(tmp_path / "mmvp", [[r["Index"], r["Question"], r["Options"], r["Correct Answer"]] for r in rows],
                      with_images=False)
    answers = tmp_path / "predictions.jsonl"
    answers.write_text("".join(json.dumps({"index": r["Index"], "response": r["response"]}) + "\n" for r in rows))
    return rows, root, answers


@pytest.mark.parametrize("response,expected", [
    ("**B**", "b"), ("<A>", "a"), ("[b]", "b"), ("*a*", "a"), ("It is left, not right.", "a"),
    ("Both (a) and (b)", None), ("The answer is not (a), it is (b).", "b"), ("I'd say right rather than left", "b"),
    ("[A] Left", "a"), ("**(B)** Right", "b"), ("left or right", None), ("A dog is here", None),
])
def test_mofs_reader_reads_the_forms_both_readers_missed(response, expected):
    assert parse_response(response, "(a) Left (b) Right") == expected


def test_lmms_eval_mode_gives_lmms_evals_own_numbers(tmp_path):
    utils = pytest.importorskip("lmms_eval.tasks.mmvp.utils")
    rows, root, answers = fixture_benchmark(tmp_path)
    # lmms-eval scores its own corrected copy of MMVP: the labels of 99 and 100 swapped (by hand here)
    docs = [{**r, "Correct Answer": {99: "(b)", 100: "(a)"}.get(r["Index"], r["Correct Answer"])} for r in rows]
    theirs = [utils.mmvp_process_results(d, [r["response"]])["mmvp_accuracy"] for d, r in zip(docs, rows)]
    ours = rescore(MMVP({"root": str(root), "scoring": "lmms_eval"}), answers, tmp_path / "ours")
    assert ours["question_accuracy"] == pytest.approx(100 * utils.mmvp_aggregate_results(theirs))
    assert ours["pair_accuracy"] == pytest.approx(100 * utils.mmvp_aggregate_pair_results(theirs))
    parsed = [json.loads(line)["parsed"] for line in (tmp_path / "ours" / "predictions.jsonl").read_text().splitlines()]
    assert [(p or "").upper() for p in parsed] == [t["pred_letter"] for t in theirs]   # all 160, letter by letter
    assert ours["scoring"] == "lmms_eval" and ours["corrections"] == "lmms_eval"
    items = MMVP({"root": str(root), "scoring": "lmms_eval"}).items()
    assert [i.prompt for i in items] == [utils.mmvp_doc_to_text(d, {"pre_prompt": "", "post_prompt": LMMS_EVAL_POST_PROMPT})
                                         for d in docs]
    # mof's own reader differs on this fixture, and is right where it differs (checked by hand in the test above)
    mof = rescore(MMVP({"root": str(root)}), answers, tmp_path / "mof")
    mof_parsed = [json.loads(line)["parsed"] for line in (tmp_path / "mof" / "predictions.jsonl").read_text().splitlines()]
    assert sum(a != b for a, b in zip(parsed, mof_parsed)) > 20 and mof["scoring"] == "mof"


def test_prompts_of_each_scoring_by_hand(tmp_path):
    root = write_mmvp(tmp_path / "mmvp", published_rows(2), with_images=False)
    item = lambda **s: MMVP({"root": str(root), **s}).items()[0].prompt  # noqa: E731
    assert item() == "Is the person standing?\n(a) Standing (b) Sitting\nAnswer with the option's letter from the given choices directly."
    assert item(prompt="bare") == "Is the person standing?\n(a) Standing (b) Sitting"
    assert item(scoring="paper") == "Is the person standing? (a) Standing (b) Sitting"   # evaluate_mllm.py: " ".join
    assert item(scoring="lmms_eval") == ("Is the person standing?\nA. Standing\nB. Sitting\n"
                                         "Answer with the option's letter from the given choices directly.")
    assert MMVP({"scoring": "lmms_eval"}).max_new_tokens == 16 and MMVP({"scoring": "paper"}).max_new_tokens == 128
    with pytest.raises(BenchmarkFormatError, match="scoring=lmms_eval asks with its own prompt; leave benchmark.prompt unset"):
        MMVP({"scoring": "lmms_eval", "prompt": "bare"})
    with pytest.raises(BenchmarkFormatError, match="benchmark.scoring: expected one of mof, lmms_eval, paper; got 'gpt'"):
        MMVP({"scoring": "gpt"})


def test_reports_refuse_to_compare_results_scored_differently():
    a = {"benchmark": "mmvp", "name": "ours", "scoring": "mof"}
    b = {"benchmark": "mmvp", "name": "theirs", "scoring": "lmms_eval"}
    old = {"benchmark": "mmvp", "name": "old"}   # written before scoring modes: scored by mof
    pope = {"benchmark": "pope", "name": "p"}
    assert comparable([a, old, pope]) == [a, old, pope]
    with pytest.raises(ReportError, match=r"mmvp results scored differently \(ours: scoring=mof, theirs: scoring=lmms_eval\)"):
        comparable([a, b])
    assert comparable([a, b], mixed_scoring=True) == [a, b]


def answers_file(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_answer_files_of_llava_the_paper_and_lmms_eval_score_alike(tmp_path):
    root = write_mmvp(tmp_path / "mmvp", published_rows(4), with_images=False)
    said = ["(a) Standing", "Sitting", "a", "I cannot tell"]   # by hand: 1, 2, 3 right; 4 unread -> 3/4, 1 of 2 pairs
    files = {
        "llava": [{"question_id": i, "prompt": "...", "text": t, "answer_id": "x", "model_id": "m", "metadata": {}}
                  for i, t in enumerate(said, 1)],
        "mmvp_paper": [{"question_id": i, "prompt": "...", "answer": "(a)", "response": t, "answer_id": "x"}
                       for i, t in enumerate(said, 1)][::-1],   # any order
        "lmms_eval": [{"doc_id": i - 1, "doc": {"Index": i, "Question": "q", "Options": "o"}, "target": "A",
                       "resps": [[t]], "filtered_resps": [t]} for i, t in enumerate(said, 1)],
    }
    for fmt, lines in files.items():
        r = rescore(MMVP({"root": str(root)}), answers_file(tmp_path / f"{fmt}.jsonl", lines), tmp_path / fmt)
        assert (r["answer_format"], r["num_correct_questions"], r["num_correct_pairs"], r["unparsed"]) == (fmt, 3, 1, 1)


@pytest.mark.parametrize("lines,error", [
    ([{"question_id": 1, "text": "a"}, {"question_id": 1, "text": "b"}],
     r"llava.jsonl:2: question 1 is answered again \(first on line 1\)"),
    ([{"question_id": 1, "text": "a"}, {"question_id": 9, "text": "b"}], r"llava.jsonl:2: question 9 is not in the benchmark"),
    ([{"question_id": 1, "text": "a"}, {"question_id": 2, "text": "b"}], r"no answer for question 3, 4 \(2 of 4\)"),
    ([{"question_id": "one", "text": "a"}], r"llava.jsonl:1: question id 'one' is not a number"),
    ([{"question_id": 1, "text": 3}], r"llava.jsonl:1: the answer is int; expected text"),
    ([{"id": 1, "output": "a"}], r"llava.jsonl:1: not an answer file mof knows"),
])
def test_answer_files_with_bad_ids_are_one_line_errors(tmp_path, lines, error):
    root = write_mmvp(tmp_path / "mmvp", published_rows(4), with_images=False)
    with pytest.raises(BenchmarkFormatError, match=error):
        rescore(MMVP({"root": str(root)}), answers_file(tmp_path / "llava.jsonl", lines), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pope_answer_files_are_matched_by_split_and_question_id(tmp_path):
    root = write_pope(tmp_path / "pope", tmp_path / "img")
    questions = {s: [json.loads(x) for x in (root / f"coco_pope_{s}.json").read_text().splitlines()]
                 for s in ("random", "popular")}   # the fixture's two splits
    # POPE's own format, one split at a time: every answer the label -> 100% on that split
    lines = [{"question_id": q["question_id"], "answer": q["label"].capitalize() + "."} for q in questions["random"]]
    r = rescore(POPE({"root": str(root), "image_root": str(tmp_path / "img"), "splits": ["random"]}),
                answers_file(tmp_path / "random.jsonl", lines), tmp_path / "out")
    assert (r["answer_format"], r["accuracy"], r["num_questions"]) == ("pope", 100.0, len(lines))
    # lmms-eval's log names the split as the doc's category: both splits in one file, every answer "yes"
    lines = [{"doc_id": k, "doc": {"question_id": q["question_id"], "category": s}, "filtered_resps": ["Yes"]}
             for s, qs in questions.items() for k, q in enumerate(qs)]
    both = {"root": str(root), "image_root": str(tmp_path / "img"), "splits": ["random", "popular"]}
    r = rescore(POPE(both), answers_file(tmp_path / "lmms.jsonl", lines), tmp_path / "out2")
    assert r["answer_format"] == "lmms_eval" and r["yes_ratio"] == 100.0 and set(r["per_split"]) == set(questions)
    # without a split, two splits are ambiguous
    with pytest.raises(BenchmarkFormatError, match="names no split.*benchmark.splits=\\[random\\]"):
        rescore(POPE(both), answers_file(tmp_path / "nosplit.jsonl", [{"question_id": 1, "text": "no"}]),
                tmp_path / "out3")


def test_openai_preprocessing_crops_as_torchvision_rounds(tmp_path):
    from mof.evaluation.benchmarks.mmvp_vlm import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, openai_transform
    from PIL import Image

    # 7x4, column c has the value 30c: no resize (short side 4), a crop of 4 from 7 columns starts at
    # round(1.5) = 2 in torchvision's CenterCrop (HF's processor: 3 // 2 = 1)
    image = Image.fromarray(np.repeat((30 * np.arange(7, dtype=np.uint8))[None, :, None], 4, 0).repeat(3, 2))
    x = openai_transform(image, 4)
    assert x.shape == (3, 4, 4)
    by_hand = [(30 * c / 255 - OPENAI_CLIP_MEAN[0]) / OPENAI_CLIP_STD[0] for c in (2, 3, 4, 5)]
    assert x[0, 0].tolist() == pytest.approx(by_hand, abs=1e-6)
    # 5x9 (portrait) to 3: short side 5 -> 3, long int(3 * 9 / 5) = 5; crop offset round(1.0) = 1 from the top
    tall = Image.new("RGB", (5, 9))
    assert openai_transform(tall, 3).shape == (3, 3, 3)


def test_openai_preprocessing_is_torchvisions_pixel_for_pixel():
    """Against OpenAI's own `_transform` (torchvision's Resize(BICUBIC), CenterCrop, RGB, ToTensor, Normalize) as
    recorded by tests/fixtures/make_openai_transform_reference.py with torchvision 0.28 outside the project: 9
    seeded images of odd sizes (portrait, landscape, square, RGBA), each to 32 and 24 pixels, equal to the last bit.
    (A crop offset rounded down differs on 1 of the 18, a bilinear resize on all 18.)"""
    from mof.evaluation.benchmarks.mmvp_vlm import openai_transform
    from PIL import Image

    ref = np.load(Path(__file__).parent / "fixtures" / "openai_transform_reference.npz")
    cases = [(k, n) for k in range(9) for n in (32, 24)]
    for k, n in cases:
        got = openai_transform(Image.fromarray(ref[f"image{k}"]), n).numpy()
        assert got.shape == ref[f"image{k}_{n}"].shape and np.array_equal(got, ref[f"image{k}_{n}"]), (k, n)


def test_ties_pick_no_image_or_image_two_as_the_original():
    from mof.evaluation.benchmarks.mmvp_vlm import statement_picks

    text, images = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    # statement 0: cos 0.707 with both images (a tie); statement 1: 0.707 against -0.707, image 1
    assert statement_picks(text, images)[1] == [None, 0]
    assert statement_picks(text, images, ties="original")[1] == [1, 0]


def test_mmvp_vlm_with_the_original_preprocessing_and_refusing_answer_files(tmp_path):
    from helpers import run_script
    from mof.model.presets import TINY_ENCODERS

    out = tmp_path / "vlm"
    run_script(["evaluate.py", "benchmark=synthetic_vlm", "benchmark.preprocess=openai", "benchmark.ties=original",
                f"checkpoint={TINY_ENCODERS['clip']}", f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={out}"])
    results = json.loads((out / "results.json").read_text())
    assert (results["preprocess"], results["ties"], results["num_pairs"]) == ("openai", "original", 180)
    proc = run_script(["evaluate.py", "benchmark=mmvp_vlm", f"benchmark.predictions={out / 'predictions.jsonl'}",
                       f"hydra.run.dir={tmp_path / 'again'}"], check=False)
    assert proc.returncode == 2 and "scores a CLIP-like encoder's image-text similarities, not answers" in proc.stderr
    assert "Traceback" not in proc.stderr
