"""Values computed by hand, at the boundaries, on asymmetric fixtures.

Each test here was written for a plausible bug that the rest of the suite once let through (injected on purpose
in a review): its expected values come from the test itself or from a published figure, never from the code under
test, and its fixtures are built so that the bug and the right answer differ.
"""

import csv
import json
import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mof import MofForConditionalGeneration, tiny_config
from mof.model.loss import IGNORE_INDEX, causal_lm_loss


def _loss_by_hand(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Position t predicts the label of t + 1: -log p(label[t + 1]), averaged over the labelled next positions."""
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target == IGNORE_INDEX:
                continue
            row = [float(x) for x in logits[b, t]]
            top = max(row)
            log_z = top + math.log(sum(math.exp(x - top) for x in row))
            total += log_z - row[target]
            count += 1
    return total / count


def _loss_fixture():
    torch.manual_seed(0)
    hidden, weight = torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(11, 8, dtype=torch.float64)
    labels = torch.tensor([[IGNORE_INDEX, 3, 7, IGNORE_INDEX, 2], [IGNORE_INDEX, IGNORE_INDEX, 9, 1, 10]])
    return hidden, weight, labels


@pytest.mark.parametrize("implementation", ["full", "chunked"])
def test_loss_is_the_next_token_cross_entropy_computed_by_hand(implementation):
    hidden, weight, labels = _loss_fixture()
    expected = _loss_by_hand(hidden @ weight.T, labels)
    if implementation == "full":
        got = causal_lm_loss(hidden @ weight.T, None, labels, "full")
    else:
        got = causal_lm_loss(hidden, weight, labels, "chunked", chunk_size=3)
    assert float(got) == pytest.approx(expected, rel=1e-6)  # `full` takes the logits to float32
    unshifted = F.cross_entropy((hidden @ weight.T).reshape(-1, 11), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    assert float(unshifted) != pytest.approx(expected, rel=1e-3)  # the fixture tells a missing shift apart


def test_liger_path_passes_the_kernel_its_rows_in_liger_order(monkeypatch):
    """Liger's kernel needs a GPU; a stand-in with its signature (weight, hidden, targets) checks mof's side."""
    calls = []

    class FusedLinearCrossEntropy:
        def __init__(self, ignore_index, reduction):
            assert (ignore_index, reduction) == (IGNORE_INDEX, "sum")

        def __call__(self, weight, hidden, targets):
            calls.append((weight.shape, hidden.shape, targets.tolist()))
            return F.cross_entropy(hidden @ weight.T, targets, ignore_index=IGNORE_INDEX, reduction="sum")

    package = types.ModuleType("liger_kernel")
    transformers_module = types.ModuleType("liger_kernel.transformers")
    transformers_module.LigerFusedLinearCrossEntropyLoss = FusedLinearCrossEntropy
    monkeypatch.setitem(sys.modules, "liger_kernel", package)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", transformers_module)
    hidden, weight, labels = _loss_fixture()
    got = causal_lm_loss(hidden, weight, labels, "liger")
    assert float(got) == pytest.approx(_loss_by_hand(hidden @ weight.T, labels), rel=1e-9)
    assert calls == [((11, 8), (6, 8), [3, 7, 2, 9, 1, 10])]  # only the positions with a target, in order


def test_mmvp_vlm_average_is_the_mean_over_patterns_not_over_pairs(tmp_path, monkeypatch):
    from mof.evaluation.benchmarks import mmvp_vlm
    from mof.model.presets import TINY_ENCODERS

    root = tmp_path / "vlm"
    rows, qid = [], 1
    for kind, pairs in (("Pattern A", 3), ("Pattern B", 1)):  # unequal sizes: the two means differ
        (root / "MMVP_VLM_Images" / kind).mkdir(parents=True)
        for _ in range(2 * pairs):
            Image.new("RGB", (32, 32), (qid * 20 % 255, 0, 0)).save(root / "MMVP_VLM_Images" / kind / f"{qid}.jpg")
            rows.append([qid, kind, f"statement {qid}"])
            qid += 1
    with open(root / "Questions.csv", "w", newline="") as f:
        csv.writer(f).writerows([["Question ID", "Type", "Statement"], *rows])
    picks = iter([[0, 1], [1, 0], [0, 0], [0, 1]])  # A: right, wrong, wrong; B: right
    monkeypatch.setattr(mmvp_vlm, "statement_picks", lambda text, image, ties: (torch.zeros(2, 2), next(picks)))
    results = mmvp_vlm.evaluate_vlm(TINY_ENCODERS["clip"], root, tmp_path / "out")
    assert results["per_pattern"]["Pattern A"]["pair_accuracy"] == pytest.approx(100 / 3)
    assert results["average"] == pytest.approx((100 / 3 + 100) / 2)  # 66.7, the paper's number
    assert results["pair_accuracy"] == pytest.approx(50.0)  # 2 of 4 pairs


def test_pope_counts_unanswerable_items_as_wrong_never_drops_them():
    from mof.evaluation.benchmarks.pope import pope_metrics

    predictions = [{"label": "yes", "parsed": "yes"}, {"label": "no", "parsed": None},
                   {"label": "yes", "parsed": None}, {"label": "no", "parsed": "no"}]
    m = pope_metrics(predictions)
    # tp 1, fp 1 (a "no" left unanswered), fn 1 (a "yes" left unanswered), tn 1, out of 4
    assert (m["tp"], m["fp"], m["fn"], m["tn"], m["num_questions"]) == (1, 1, 1, 1, 4)
    assert [m[k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")] == pytest.approx([50, 50, 50, 50, 25])


def _unit(x: float) -> list[float]:
    return [x, math.sqrt(1.0 - x * x)]


@pytest.mark.parametrize("search", ["faiss", "brute_force"])
def test_mining_thresholds_are_strict_at_the_boundary(search):
    """The paper's rule is CLIP cosine > t_clip and DINO cosine < t_dino: a pair exactly at a threshold is out.
    Cosines 0.5 and 0.625 are exact in float32."""
    from mof.mining.search import blind_pairs, brute_force_pairs

    def mine(clip, dino, t_clip, t_dino):
        clip, dino = np.asarray(clip, np.float32), np.asarray(dino, np.float32)
        if search == "brute_force":
            return brute_force_pairs(clip, dino, t_clip, t_dino)
        return set(map(tuple, blind_pairs(clip, dino, t_clip, t_dino, k=2)[0].tolist()))

    orthogonal = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    # CLIP: (0, 1) at exactly 0.5, (0, 2) at 0.625, (1, 2) at 0.99; DINO sees every pair as different
    assert mine([[1, 0], [0.5, math.sqrt(0.75)], _unit(0.625)], orthogonal, 0.5, 0.5) == {(0, 2), (1, 2)}
    # DINO: (0, 1) at exactly 0.5, (0, 2) at 0, (1, 2) at 0.87; CLIP sees every pair as the same
    same = [[1.0, 0.0]] * 3
    assert mine(same, [[1, 0], [0.5, math.sqrt(0.75)], [0, 1]], 0.5, 0.5) == {(0, 2)}


def test_sva_gives_each_window_its_own_query():
    """With every window identical, a token differs from the others only through its own query."""
    model = MofForConditionalGeneration(tiny_config(fusion={"type": "sva", "grid": 4, "layers": 2, "num_heads": 4}))
    fusion = model.model.fusion
    with torch.no_grad():
        for p in fusion.positions:
            p.zero_()
    features = [torch.ones(1, r * c, spec.hidden_size) for spec, (r, c) in zip(model.config.encoder_specs, fusion.grids)]
    with torch.no_grad():
        out = fusion(features)[0]
    assert out.shape[0] == 16
    distances = torch.cdist(out, out) + torch.eye(16) * 1e9
    assert distances.min() > 1e-4  # no two of the 16 tokens alike


def test_zero_memory_matches_the_zero_papers_figure_1():
    """Rajbhandari et al. 2020, Fig. 1: 7.5B parameters, 64 GPUs, K = 12: 120 GB baseline, 16.6 GB with ZeRO-2
    (optimizer states + gradients partitioned), 1.9 GB with ZeRO-3 (parameters too)."""
    from mof.estimate import model_state_bytes

    n = 7.5e9
    gb = {s: model_state_bytes(n, n, s, 64)["gpu"] / 1e9 for s in ("ddp", "deepspeed_zero2", "deepspeed_zero3")}
    assert gb["ddp"] == pytest.approx(120.0, abs=0.05)
    assert gb["deepspeed_zero2"] == pytest.approx(16.6, abs=0.05)
    assert gb["deepspeed_zero3"] == pytest.approx(1.9, abs=0.05)


def _results(folder, scores: dict):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"per_pattern": {p: {"pair_accuracy": s} for p, s in scores.items()}}))
    return folder


def test_correlate_pairs_patterns_by_name_whatever_their_order(tmp_path):
    from mof.evaluation.analyses import correlate

    clip = _results(tmp_path / "clip", {"Orientation": 10.0, "Color": 90.0, "Quantity": 50.0, "State": 30.0})
    # the same scores by name, written in another order: r = 1 by name, not by position
    mllm = _results(tmp_path / "mllm", {"State": 30.0, "Quantity": 50.0, "Orientation": 10.0, "Color": 90.0})
    odd = _results(tmp_path / "odd", {"b": 2.0, "a": 1.0, "c": 3.0})  # names outside MMVP's: matched by name too
    odd_clip = _results(tmp_path / "odd_clip", {"a": 1.0, "c": 3.0, "b": 2.0})
    rows = correlate([clip], [mllm], tmp_path / "r")["pairs"] + correlate([odd_clip], [odd], tmp_path / "r2")["pairs"]
    assert [(r["pearson_r"], r["patterns"]) for r in rows] == [(pytest.approx(1.0), 4), (pytest.approx(1.0), 3)]


def test_truncation_boundaries():
    from mof.data.conversation import ConversationError, Encoded
    from mof.data.dataset import ConversationDataset

    image = 99
    dataset = ConversationDataset.__new__(ConversationDataset)
    dataset.image_token_id = image
    enc = Encoded([1, image, image, 5, 6, 7], [IGNORE_INDEX] * 4 + [6, 7])

    def cut(max_length):
        dataset.max_length = max_length
        return dataset._truncate(enc)

    assert cut(6) == (enc, False)  # exactly max_length: kept whole
    kept, truncated = cut(5)
    assert truncated and kept.input_ids == [1, image, image, 5, 6] and kept.labels[-1] == 6
    with pytest.raises(ConversationError) as e:
        cut(4)  # the visual tokens fit, but no answer token is left
    assert e.value.reason == "fully_masked_after_truncation"
    with pytest.raises(ConversationError) as e:
        cut(2)  # the last visual token would be cut
    assert e.value.reason == "truncated_visual_tokens"


def test_lmms_eval_plugin_honours_each_requests_generation_settings(tiny_llava):
    pytest.importorskip("lmms_eval")
    from lmms_eval.api.instance import Instance

    from mof.evaluation.lmms_eval_plugin import MofLmms

    from mof.data import load_tokenizer

    load_tokenizer("tiny").save_pretrained(tiny_llava[1])
    plugin = MofLmms(pretrained=tiny_llava[1], batch_size=4)
    image = Image.new("RGB", (32, 32), (120, 30, 200))
    plugin.task_dict = {"t": {"test": {0: {"image": image}}}}

    def request(k, **gen_kwargs):
        return Instance("generate_until", ("Describe it.", gen_kwargs, lambda doc: [doc["image"]], 0, "t", "test"), k,
                        {"task": "t", "doc_id": 0, "repeats": 1})

    long, short = plugin.generate_until([request(0, max_new_tokens=8, until=[]), request(1, max_new_tokens=2, until=[])])
    # greedy: 2 new tokens are the start of 8 (byte-level tokens: counted by generation, not by re-tokenising)
    assert long.startswith(short) and 0 < len(short) < len(long)
    stop = long.strip()[len(long.strip()) // 2:][:2]
    cut = plugin.generate_until([request(2, max_new_tokens=8, until=[stop])])[0]
    assert stop not in cut and cut == long.split(stop)[0]


def test_sweeper_refuses_a_study_stored_in_the_other_direction(tmp_path):
    import optuna

    from hydra_plugins.mof_optuna_sweeper.optuna_sweeper import StudyMismatchError, open_study

    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name="s", storage=storage, direction="minimize")
    with pytest.raises(StudyMismatchError, match=r"^hydra.sweeper.direction: 'maximize', but the study 's'"):
        open_study("s", storage, "maximize")
    assert open_study("new", storage, "maximize").direction == optuna.study.StudyDirection.MAXIMIZE


def test_correlation_needs_three_common_patterns(tmp_path):
    """Over two patterns r is always +-1: reported as n/a, never as a number."""
    from mof.evaluation.analyses import correlate

    clip = _results(tmp_path / "clip", {"Orientation": 10.0, "Color": 90.0, "Texts": 40.0})
    mllm = _results(tmp_path / "mllm", {"Orientation": 20.0, "Color": 30.0})
    row = correlate([clip], [mllm], tmp_path / "r")["pairs"][0]
    assert row["pearson_r"] is None and row["patterns"] == 2
    assert "n/a (2 common patterns; r needs 3)" in (tmp_path / "r" / "correlation.md").read_text()
    assert json.loads((tmp_path / "r" / "correlation.json").read_text())[0]["pearson_r"] is None


def test_sample_lengths_of_padded_and_packed_batches():
    from mof.model.flops import sample_lengths

    ids = torch.zeros(2, 6, dtype=torch.long)
    assert sample_lengths(ids, attention_mask=torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])) == [3, 6]
    assert sample_lengths(ids, position_ids=torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]])) == [3, 2, 1, 4, 2]
    assert sample_lengths(ids) == [6, 6]


def test_training_flops_by_hand():
    """A 2-layer LLM of width 64: 6 N per token + 12 L h s per token, and the towers' and projectors' share."""
    from mof import MofForConditionalGeneration, tiny_config
    from mof.model.flops import training_flops

    model = MofForConditionalGeneration(tiny_config(fusion="interleaved", vocab_size=544))
    n_llm = sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
    L, h = model.config.text_config.num_hidden_layers, model.config.text_config.hidden_size
    text_only = training_flops(model, [10, 20], images=0)
    assert text_only == 6 * n_llm * 30 + 12 * L * h * (10 * 10 + 20 * 20)
    assert training_flops(model, [10, 20], images=1) > text_only


def test_grad_norm_is_the_total_2_norm(monkeypatch):
    """GradNormMonitor logs Lightning's `grad_norm` total: sqrt(3^2 + 4^2 + 12^2) = 13 over two parameters."""
    from mof.training.callbacks import GradNormMonitor

    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
            self.logged = {}

        def log(self, name, value, **_):
            self.logged[name] = float(value)

    module = Module()
    module.a.grad, module.b.grad = torch.tensor([3.0, 4.0]), torch.tensor([12.0])
    trainer = type("T", (), {"global_step": 0, "log_every_n_steps": 1})()
    GradNormMonitor().on_before_optimizer_step(trainer, module, None)
    assert module.logged["train/grad_norm"] == pytest.approx(13.0)


def test_pearson_is_numpys_and_undefined_where_a_side_is_constant():
    from mof.evaluation.report import pearson

    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(0.9819805)   # by hand: 3 / sqrt(2 x 42 / 9)
    assert math.isnan(pearson([1, 2, 3], [5, 5, 5])) and math.isnan(pearson([1], [2]))
