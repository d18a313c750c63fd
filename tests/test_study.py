"""The miniature study: the mining's scoring against the attribute side file (by hand), the mined benchmark, and a
short version of `reproduce.py` end to end (few steps, one seed, two fusions)."""

import csv
import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from helpers import compose_cfg
from mof.data.synthetic import make_images
from mof.study.mining import (differs_in_one_property, pair_breakdown, read_attributes, score_pairs,
                              write_mined_benchmark, write_pool)


def test_a_pair_differs_in_one_property_only_when_everything_else_is_equal():
    arrow = {"image": "0.png", "scene": 0, "pattern": "orientation and direction", "value": "left", "color": "red"}
    assert differs_in_one_property(arrow, {**arrow, "image": "1.png", "value": "right"})
    assert differs_in_one_property(arrow, {**arrow, "image": "9.png", "scene": 4, "value": "right"})  # another scene
    assert not differs_in_one_property(arrow, {**arrow, "value": "right", "color": "blue"})  # two properties
    assert not differs_in_one_property(arrow, {**arrow, "image": "1.png"})  # no difference at all
    lamp = {"image": "2.png", "scene": 1, "pattern": "state and condition", "value": "on"}
    assert not differs_in_one_property(arrow, {**lamp, "value": "right"})  # another pattern


def test_the_two_images_of_a_scene_differ_in_its_property_alone():
    items = list(make_images(2, seed=5))
    assert len(items) == 2 * 2 * 9
    for (_, a), (_, b) in zip(items[::2], items[1::2]):
        assert a["pattern"] == b["pattern"] and a["value"] != b["value"]
        assert {k: v for k, v in a.items() if k != "value"} == {k: v for k, v in b.items() if k != "value"}


def test_mining_precision_and_the_mined_benchmark_by_hand(tmp_path):
    pool = write_pool(tmp_path / "pool", scenes_per_pattern=2, seed=0)
    attrs = read_attributes(pool)
    assert len(attrs) == 36 and (pool / "images" / "000035.png").exists()
    by = sorted(attrs.values(), key=lambda a: a["image"])
    # three mined pairs: a true one (a scene's two images), a false one (two patterns), and another true one
    pairs = [(by[0], by[1]), (by[0], by[2]), (by[4], by[5])]
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "clip_cosine", "dino_cosine"])
        for a, b in pairs:
            w.writerow([str(pool / "images" / a["image"]), str(pool / "images" / b["image"]), "0.99", "0.1"])
    score = score_pairs(tmp_path / "pairs.csv", pool)
    assert score["pairs"] == 3 and score["true_pairs"] == 2 and score["precision"] == pytest.approx(2 / 3)
    assert score["properties"] == {"orientation": 1, "state": 1}
    info = write_mined_benchmark(tmp_path / "bench", tmp_path / "pairs.csv", pool, max_pairs_per_pattern=15)
    assert info["pairs"] == 2 and info["per_pattern"] == {"orientation and direction": 1, "state and condition": 1}
    rows = list(csv.DictReader(open(tmp_path / "bench" / "Questions.csv")))
    # the arrow pair first: left is option (a), right (b), as the pattern lists them; opposite answers in a pair
    assert [r["Correct Answer"] for r in rows] == ["(a)", "(b)", "(a)", "(b)"]
    assert rows[0]["Question"] == "Which way is the arrow pointing?" and rows[2]["Question"] == "Is the lamp on or off?"


@pytest.mark.parametrize("block", [2, 1024])
def test_the_pair_breakdown_counts_every_pair_by_what_each_encoder_says_by_hand(block):
    import numpy as np

    arrow = {"pattern": "orientation and direction", "value": "left", "color": "red"}
    attrs = [{**arrow, "image": "0.png", "scene": 0}, {**arrow, "image": "1.png", "scene": 0, "value": "right"},
             {**arrow, "image": "2.png", "scene": 1},                      # image 0's content, another scene
             {"image": "3.png", "scene": 2, "pattern": "presence of specific features", "value": "yes", "color": "red"},
             {**arrow, "image": "4.png", "scene": 3, "value": "right", "color": "blue"}]
    # CLIP: images 0-3 at cosine > 0.98 of one another (rows of any length), image 4 orthogonal to them; so above
    # 0.95: 0-1 and 1-2 (true: an arrow's two directions), 0-3, 1-3, 2-3 (two patterns); 0-2 (one content) left out
    clip = np.array([[3.0, 0.3, 0.0], [1.0, 0.0, 0.1], [2.0, 0.1, 0.1], [1.0, -0.1, 0.0], [0.0, 0.0, 1.0]])
    # DINO: 0 and 2 alike, 1 apart from both (cosine 0), 3 at cosine 0.8 of 0 and 2 and 0.6 of 1
    dino = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    # mined (DINO below 0.7): 0-1 and 1-2 (true), 1-3 (false); 0-2 (one content) not
    assert pair_breakdown(clip, dino, attrs, 0.95, 0.7, block=block) == {
        "clip_same": {"true": {"orientation": 2}, "false": 3, "one_content": 1, "precision": pytest.approx(2 / 6)},
        "mined": {"true": {"orientation": 2}, "false": 1, "one_content": 0, "precision": pytest.approx(2 / 3)}}
    # a DINO that sees image 2 apart from 0 (cosine 0.6) and 3 (0.48) mines their pairs too: one of one content
    dino[2] = [0.6, 0.0, 0.8]
    assert pair_breakdown(clip, dino, attrs, 0.95, 0.7, block=block)["mined"] == {
        "true": {"orientation": 2}, "false": 2, "one_content": 1, "precision": pytest.approx(2 / 5)}
    none = pair_breakdown(clip, dino, attrs, 0.9999, 0.7, block=block)
    assert none["clip_same"] == {"true": {}, "false": 0, "one_content": 0, "precision": None}


@pytest.mark.slow
def test_short_study_runs_end_to_end_and_continues_from_its_cache(tmp_path, data_dir, capsys):
    from mof.study.run import reproduce

    cfg = compose_cfg("reproduce", tmp_path / "study", data_dir)
    with open_dict(cfg):
        cfg.seeds = [0]
        cfg.pairs_per_pattern = 2
        cfg.mining.scenes_per_pattern = 8
        cfg.fusions = {"none": ["mof=none"], "interleaved": ["mof=interleaved"]}
        cfg.train_overrides = ["trainer.max_steps=3", "data.synthetic.pairs_per_pattern=4", "data.batch_size=4",
                               "trainer.enable_progress_bar=false", "data.num_workers=0"]
    summary = reproduce(cfg)
    saved = json.loads((tmp_path / "study" / "summary.json").read_text())
    for key in ("clip_vlm", "mining", "mllm", "correlation", "seeds", "minutes"):
        assert key in saved
    assert set(saved["clip_vlm"]["per_pattern"]) and saved["mining"]["pairs"] >= saved["mining"]["true_pairs"] > 0
    breakdown = saved["mining"]["breakdown"]   # every pair: those mined are among those the CLIP calls the same
    assert sum(breakdown["mined"]["true"].values()) <= sum(breakdown["clip_same"]["true"].values())
    assert breakdown["mined"]["false"] <= breakdown["clip_same"]["false"]
    cosines = saved["mining"]["scene_cosines"]
    assert len(cosines) == 9 and all(-1 <= v <= 1 for c in cosines.values() for v in c.values())
    for fusion in ("none", "interleaved"):
        m = saved["mllm"][fusion]
        assert 0 <= m["benchmark"]["mean"] <= 100 and m["benchmark"]["std"] == 0.0 and m["benchmark"]["per_pattern"]
    assert saved["seeds"] == [0] and summary["mllm"].keys() == saved["mllm"].keys()
    assert set(saved["step_minutes"]) == {"clip_vlm", "mine", "none-seed0", "interleaved-seed0"}
    for name in ("correlation.png", "tradeoff.png", "fusions.png"):
        assert (tmp_path / "study" / name).stat().st_size > 0
    # the same command again: every step cached, nothing trained again
    capsys.readouterr()
    again = reproduce(cfg)
    printed = capsys.readouterr().out
    assert "running" not in printed and printed.count("cached") == 4
    # its minutes are still those the steps took, not the seconds of a rerun from the cache
    assert again["minutes"] == saved["minutes"] > sum(saved["step_minutes"].values()) / 2


def test_study_steps_run_side_by_side_with_the_cores_shared(tmp_path, data_dir):
    """`parallel: 2`: two steps run at once (each waits until the other has started, which one after the other
    never happens), each told to use half the cores; a failed step fails the study after the other ends."""
    import os

    from mof.study.run import Study, StudyStepFailed

    cfg = compose_cfg("reproduce", tmp_path / "study", data_dir)
    study = Study(cfg)
    wait = ("import os, sys, time, pathlib; d = pathlib.Path(sys.argv[1]); (d / sys.argv[2]).touch(); "
            "t = time.time()\nwhile len(list(d.glob('started-*'))) < 2 and time.time() - t < 60: time.sleep(0.05)\n"
            "assert len(list(d.glob('started-*'))) == 2, 'ran alone'\n"
            "(d / sys.argv[2].replace('started', 'threads')).write_text(os.environ.get('OMP_NUM_THREADS', 'unset'))")
    steps = [(name, ["-c", wait, str(tmp_path), f"started-{name}"], tmp_path / f"threads-{name}") for name in "ab"]
    study.run_all(steps, parallel=2)
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert [(tmp_path / f"threads-{n}").read_text() for n in "ab"] == [threads, threads]
    assert set(json.loads((tmp_path / "study" / "timing.json").read_text())) == {"a", "b"}
    touch = "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()"
    fail = [("bad", ["-c", "raise SystemExit(3)"], tmp_path / "never"),
            ("good", ["-c", touch, str(tmp_path / "good")], tmp_path / "good")]
    with pytest.raises(StudyStepFailed, match="bad failed"):
        study.run_all(fail, parallel=2)
    assert "good" in json.loads((tmp_path / "study" / "timing.json").read_text())


def test_a_study_folder_refuses_a_rerun_that_asks_for_other_encoders_or_recipe(tmp_path, data_dir):
    """Cached steps are reused by folder: a rerun with another DINO (or pool, or training overrides) in the same
    folder would mix old results with new ones silently. Added seeds and fusions continue the study."""
    from mof.errors import ConfigError
    from mof.study.run import check_recipe

    cfg = compose_cfg("reproduce", tmp_path / "study", data_dir)
    out = tmp_path / "study"
    out.mkdir()
    check_recipe(out, cfg)
    check_recipe(out, cfg)  # the same again: continues
    with open_dict(cfg):
        cfg.seeds = [0, 1, 2, 3]
        cfg.fusions["concat"] = ["mof=concat"]
    check_recipe(out, cfg)  # more seeds, one more fusion: continues
    assert json.loads((out / "study.json").read_text())["fusions"]["concat"] == ["mof=concat"]
    other = compose_cfg("reproduce", out, data_dir, [f"encoders.dino={tmp_path / 'my-dino'}"])
    with pytest.raises(ConfigError, match=r"^encoders: the study in .* was made with \{'clip': 'tiny', 'dino': 'tiny'\}"):
        check_recipe(out, other)
    changed = compose_cfg("reproduce", out, data_dir, ["fusions.none=[mof\\=none,trainer.max_epochs\\=1]"])
    with pytest.raises(ConfigError, match="^fusions.none: the study in"):
        check_recipe(out, changed)
    pool = compose_cfg("reproduce", out, data_dir, ["mining.scenes_per_pattern=41"])
    with pytest.raises(ConfigError, match="^mining: "):
        check_recipe(out, pool)
    from mof.study.run import reproduce

    misspelt = compose_cfg("reproduce", tmp_path / "new", data_dir, ["train_data=synthetic_rar"])
    with pytest.raises(ConfigError, match=r"^train_data: unknown data option 'synthetic_rar' \(did you mean "
                                          r"'synthetic_rare'\?\); known: .*synthetic, synthetic_rare"):
        reproduce(misspelt)
    assert not (tmp_path / "new").exists()   # refused before any step
    rare = compose_cfg("reproduce", out, data_dir, ["train_data=synthetic_rare"])
    with pytest.raises(ConfigError, match="^train_data: the study in .* was made with 'synthetic', not 'synthetic_rare'"):
        check_recipe(out, rare)
    # the same folder name, other weights: a DINO trained again in place is another encoder
    import shutil

    from mof.model.presets import TINY_ENCODERS

    mine = tmp_path / "my-dino"
    shutil.copytree(TINY_ENCODERS["dino"], mine)
    made = compose_cfg("reproduce", tmp_path / "other", data_dir, [f"encoders.dino={mine}"])
    (tmp_path / "other").mkdir()
    check_recipe(tmp_path / "other", made)
    check_recipe(tmp_path / "other", made)  # untouched: continues
    weights = bytearray((mine / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (mine / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ConfigError, match=rf"^weights: the dino weights at {mine} changed since the study in "):
        check_recipe(tmp_path / "other", made)


class StopBeforeTraining(Exception):
    pass


def fake_study_steps(monkeypatch, out: Path, calls: list, steps: list):
    """`reproduce` with its steps faked: each command is recorded in `calls` (its results faked), mining found one
    pair, and it stops where the MLLMs would train (their steps recorded in `steps`)."""
    from mof.study import run as study_run

    def fake_run(self, name, args, done, env=None):
        calls.append((name, args))
        return done

    def fake_run_all(self, s, parallel):
        steps.extend(s)
        raise StopBeforeTraining

    monkeypatch.setattr(study_run.Study, "run", fake_run)
    monkeypatch.setattr(study_run.Study, "run_all", fake_run_all)
    breakdown = {k: {"true": {}, "false": 0, "one_content": 0, "precision": None} for k in ("clip_same", "mined")}
    for name, value in {"score_pairs": {"pairs": 1, "precision": 1.0, "properties": {}}, "scene_cosines": {},
                        "pair_breakdown_of": breakdown, "pattern_scores": {}, "read_results": {}}.items():
        monkeypatch.setattr(study_run, name, lambda *a, v=value: v)
    monkeypatch.setattr(study_run, "write_mined_benchmark", lambda d, *a: {"pairs": 1, "per_pattern": {}})
    (out / "mining" / "run").mkdir(parents=True)
    (out / "mining" / "run" / "summary.json").write_text('{"shards": 1}')
    return study_run


def test_a_benchmark_half_written_when_the_study_was_killed_is_made_again(tmp_path, data_dir, monkeypatch):
    """The mined benchmark is written whole or not at all: a study killed while writing it left a Questions.csv
    and half the images, which the next run took for the finished benchmark (and then failed with a traceback)."""
    out = tmp_path / "study"
    study_run = fake_study_steps(monkeypatch, out, [], [])
    (out / "benchmark" / "MMVP Images").mkdir(parents=True)   # what the killed study left
    (out / "benchmark" / "Questions.csv").write_text("Index,Question,Options,Correct Answer,Pattern\n1,Q,O,(a),P\n")
    (out / "benchmark" / "MMVP Images" / "1.jpg").write_bytes(b"")

    def write(d, pairs_csv, pool, per_pattern):
        (d / "Questions.csv").write_text("the whole benchmark")
        return {"questions": 4, "pairs": 2, "per_pattern": {"Orientation and Direction": 2}}

    monkeypatch.setattr(study_run, "write_mined_benchmark", write)
    cfg = compose_cfg("reproduce", out, data_dir)
    with open_dict(cfg):
        cfg.mining.scenes_per_pattern = 1
    with pytest.raises(StopBeforeTraining):
        study_run.reproduce(cfg)
    assert (out / "benchmark" / "Questions.csv").read_text() == "the whole benchmark"
    assert not (out / "benchmark" / "MMVP Images").exists()
    monkeypatch.setattr(study_run, "write_mined_benchmark", lambda *a: pytest.fail("made twice"))
    with pytest.raises(StopBeforeTraining):
        study_run.reproduce(cfg)   # a finished one is kept


def test_the_study_hands_its_encoders_to_every_step(tmp_path, data_dir, monkeypatch):
    """`encoders.dino=DIR`: MMVP-VLM reads the CLIP, mine.py both, and every training both (as train.py options);
    `train_data=...`: every training's data."""
    from mof.model.presets import TINY_ENCODERS

    calls, steps = [], []
    out = tmp_path / "study"
    study_run = fake_study_steps(monkeypatch, out, calls, steps)
    (tmp_path / "my-dino").mkdir()
    cfg = compose_cfg("reproduce", out, data_dir, [f"encoders.dino={tmp_path / 'my-dino'}", "train_data=synthetic_rare"])
    with open_dict(cfg):
        cfg.mining.scenes_per_pattern = 1
    with pytest.raises(StopBeforeTraining):
        study_run.reproduce(cfg)
    (_, vlm), (_, mine) = calls
    assert f"checkpoint={TINY_ENCODERS['clip']}" in vlm
    assert "encoders.clip=tiny" in mine and f"encoders.dino={tmp_path / 'my-dino'}" in mine
    assert "k=18" in mine   # `mining.k: all`: every image of the 9 x 2 x 1 pool among an image's neighbours
    assert len(steps) == 15  # 5 fusions x 3 seeds
    # the longest trainings start first (two at a time: the last ones to start are short, and no core waits alone)
    assert [name for name, _, _ in steps[:4]] == ["interleaved-seed0", "interleaved-seed1", "interleaved-seed2", "none-seed0"]
    for _, args, _ in steps:
        assert "model.config.encoders.clip=tiny" in args and f"model.config.encoders.dino={tmp_path / 'my-dino'}" in args
        assert "data=synthetic_rare" in args   # the MLLMs' data: the study's `train_data`


def test_only_trains_the_fusions_it_names_and_refuses_an_unknown_one(tmp_path, data_dir, monkeypatch):
    """`only=[none,interleaved]`: a subset of the fusions (a `fusions=` override is merged into the defaults by
    Hydra, so it cannot remove one), still the longest first; a misspelt name is refused before any step."""
    from mof.errors import ConfigError

    calls, steps = [], []
    out = tmp_path / "study"
    study_run = fake_study_steps(monkeypatch, out, calls, steps)
    cfg = compose_cfg("reproduce", out, data_dir, ["only=[none,interleaved]"])
    with open_dict(cfg):
        cfg.mining.scenes_per_pattern = 1
    with pytest.raises(StopBeforeTraining):
        study_run.reproduce(cfg)
    assert [name for name, _, _ in steps] == ["interleaved-seed0", "interleaved-seed1", "interleaved-seed2",
                                              "none-seed0", "none-seed1", "none-seed2"]
    calls.clear()
    for k in ("al", 0):   # refused before any step, not by mine.py after the CLIP's evaluation
        with pytest.raises(ConfigError, match=rf"^mining.k: expected a positive integer or all, got {k!r}"):
            study_run.reproduce(compose_cfg("reproduce", out, data_dir, [f"mining.k={k}"]))
    assert calls == []
    cfg = compose_cfg("reproduce", out, data_dir, ["only=[nonee]"])
    with pytest.raises(ConfigError, match=r"^only: unknown fusion 'nonee' \(did you mean 'none'\?\); known: interleaved, none"):
        study_run.reproduce(cfg)
    assert calls == []
