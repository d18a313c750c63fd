import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import FAST, ROOT, run_script, train_cfg
from mof import MofForConditionalGeneration
from mof.errors import ConfigError
from mof.checkpoints.files import AtomicCheckpointIO
from mof.training.module import NonFiniteLossError
from mof.training.run import train


def ckpt_state(run_dir: Path, name="last.ckpt") -> dict:
    return torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("fusion", ["none", "additive", "interleaved", "concat", "sva"])
def test_every_fusion_mode_trains_and_exports(tmp_path, data_dir, fusion):
    cfg = train_cfg(tmp_path, data_dir, [f"mof={fusion}", "trainer.max_steps=3"])
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    model = MofForConditionalGeneration.from_pretrained(tmp_path / "export")
    assert model.config.fusion["type"] == fusion
    assert (tmp_path / "export" / "tokenizer.json").exists()
    assert (tmp_path / "export" / "preprocessor_config.json").exists()
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert "projectors" in (tmp_path / "parameters.txt").read_text()


def test_additive_alpha_reaches_the_model(tmp_path, data_dir):
    cfg = train_cfg(tmp_path, data_dir, ["mof=additive", "mof.alpha=0.25", "trainer.max_steps=1"])
    train(cfg)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["fusion"] == {"type": "additive", "alpha": 0.25, "mix_weights": None, "after_projector": False,
                                "resample": False}


def _weights(module_state: dict, prefix: str) -> dict:
    return {k: v for k, v in module_state.items() if k.startswith(prefix)}


def test_pretrain_trains_projectors_only_and_checkpoint_holds_them_only(tmp_path, data_dir):
    cfg = train_cfg(tmp_path, data_dir, ["stage=pretrain", "trainer.max_steps=3"])
    train(cfg)
    state = ckpt_state(tmp_path)["state_dict"]
    assert state and all(k.startswith("model.model.fusion.") for k in state)
    exported = MofForConditionalGeneration.from_pretrained(tmp_path / "export").state_dict()
    torch.manual_seed(cfg.seed)
    init = MofForConditionalGeneration(MofForConditionalGeneration.config_class.from_pretrained(tmp_path / "export"))
    init_state = init.load_pretrained_components().state_dict()  # the shipped towers
    for k in ("lm_head.weight", "model.vision_encoders.0.tower.embeddings.patch_embedding.weight",
              "model.vision_encoders.1.tower.encoder.layer.0.attention.q_proj.weight"):
        assert torch.equal(exported[k], init_state[k]), k  # frozen: unchanged
    key = "model.fusion.projectors.0.0.weight"
    assert not torch.equal(exported[key], init_state[key])


def test_stage1_to_stage2_hand_over(tmp_path, data_dir):
    stage1 = tmp_path / "stage1"
    train(train_cfg(stage1, data_dir, ["stage=pretrain", "trainer.max_steps=2"]))
    stage2 = tmp_path / "stage2"
    cfg = train_cfg(stage2, data_dir, ["stage=finetune", f"model.projector_from={stage1}", "trainer.max_steps=1",
                                      "export=false"])
    from mof.training.from_config import build_model_from_cfg

    model = build_model_from_cfg(cfg)
    s1 = load_file(str(stage1 / "export" / "model.safetensors"))
    for k, v in model.fusion.state_dict().items():
        assert torch.equal(v, s1[f"fusion.{k}"])
    with pytest.raises(ConfigError, match="model.projector_from"):
        train(train_cfg(tmp_path / "x", data_dir, [f"model.projector_from={tmp_path}/nothing"]))


def test_lora_stage_exports_adapter_and_merged_model(tmp_path, data_dir):
    cfg = train_cfg(tmp_path, data_dir, ["stage=lora", "stage.lora.r=4", "stage.lora.alpha=8", "trainer.max_steps=3",
                                         "stage.optimizer.lr=1e-2", "stage.optimizer.projector_lr=1e-2"])
    train(cfg)
    state = ckpt_state(tmp_path)["state_dict"]
    assert any("lora_A" in k for k in state) and any("fusion" in k for k in state)
    assert not any("vision_encoders" in k and "lora" in k for k in state)  # never LoRA on the towers
    assert not any(k.endswith("q_proj.base_layer.weight") for k in state)  # frozen LLM not saved
    adapter = tmp_path / "export" / "lora_adapter"
    assert (adapter / "adapter_model.safetensors").exists()
    # logits of the LoRA model (rebuilt from its checkpoint) equal those of the merged export
    from mof.checkpoints.rebuild import rebuild_from_checkpoint

    lora_model, *_ = rebuild_from_checkpoint(tmp_path)
    merged = MofForConditionalGeneration.from_pretrained(tmp_path / "export").eval()
    lora_model.eval()
    n = merged.num_visual_tokens
    ids = torch.tensor([[1, *([3] * n), 10, 11, 12]])
    px = [torch.randn(1, 3, 64, 64)] * 2
    torch.testing.assert_close(lora_model(input_ids=ids, pixel_values=px).logits,
                               merged(input_ids=ids, pixel_values=px).logits, rtol=1e-4, atol=1e-5)
    base = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in base.items())  # LoRA actually trained


def _trainable(run_dir):
    return ckpt_state(run_dir)["state_dict"]


def test_exact_resume_matches_uninterrupted_run(tmp_path, data_dir):
    """With packing (the default padded path resumes exactly in the SIGKILL and graceful-stop tests)."""
    common = ["trainer.deterministic=true", "checkpoint.every_n_train_steps=3", "export=false", "trainer.max_epochs=2",
              "data.packing=true", "data.pack_length=400"]
    full = tmp_path / "full"
    train(train_cfg(full, data_dir, [*common, "trainer.max_steps=12"]))
    part = tmp_path / "part"
    train(train_cfg(part, data_dir, [*common, "trainer.max_steps=12", "stop_at_step=6"]))
    assert ckpt_state(part)["global_step"] == 6
    train(train_cfg(part, data_dir, [*common, "trainer.max_steps=12", "resume=auto"]))
    a, b = _trainable(full), _trainable(part)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ckpt_state(part)["global_step"] == 12


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches(tmp_path, data_dir):
    args = ["train.py", *FAST, "evaluate_after=null", "export=false", f"paths.data_dir={data_dir}",
            "checkpoint.every_n_train_steps=2", "checkpoint.keep_every_n_train_steps=2", "trainer.max_steps=16",
            "trainer.deterministic=true"]
    ref = tmp_path / "ref"
    run_script([*args, f"hydra.run.dir={ref}"])
    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, *args, f"hydra.run.dir={killed}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        steps = sorted((killed / "checkpoints").glob("step*.ckpt")) if (killed / "checkpoints").exists() else []
        if any(int(p.stem[4:]) >= 4 for p in steps):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_killed = ckpt_state(killed)["global_step"]  # last.ckpt may trail the newest step file
    assert 2 <= step_killed < 16  # mid-epoch: an epoch is 18 batches here
    run_script([*args, f"hydra.run.dir={killed}", "resume=auto"])
    a, b = _trainable(ref), _trainable(killed)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_atomic_checkpoint_write_keeps_previous_on_crash(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)

    def broken_save(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=False) == {"step": 1}


def test_non_finite_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path, data_dir, monkeypatch):
    forward = MofForConditionalGeneration.forward
    calls = []

    def nan_from_third_step(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) >= 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(MofForConditionalGeneration, "forward", nan_from_third_step)
    cfg = train_cfg(tmp_path, data_dir, ["checkpoint.every_n_train_steps=1", "trainer.max_steps=20"])
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at global step 2.*finite loss and weights: .*last.ckpt"):
        train(cfg)
    last = ckpt_state(tmp_path)
    assert last["global_step"] >= 1 and all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_checkpoints_kept_are_last_and_every_nth_step(tmp_path, data_dir):
    train(train_cfg(tmp_path, data_dir, ["checkpoint.every_n_train_steps=2", "checkpoint.keep_every_n_train_steps=3",
                                         "trainer.max_steps=7", "export=false"]))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last-previous.ckpt", "last.ckpt", "step000003.ckpt", "step000006.ckpt"]
    assert [ckpt_state(tmp_path, n)["global_step"] for n in names[1:]] == [7, 3, 6]  # the end of training saves last


def test_export_cli_from_checkpoint_matches_training_export(tmp_path, data_dir):
    train(train_cfg(tmp_path, data_dir, ["trainer.max_steps=2"]))
    run_script(["-m", "mof.checkpoints.export", str(tmp_path / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "again")])
    a = load_file(str(tmp_path / "export" / "model.safetensors"))
    b = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("override,key", [
    ("mof.type=sum", "mof.type"),
    ("mof=additive mof.alpha=1.5", "mof.alpha"),
    ("stage.optimizer.lr=-1", "stage.optimizer.lr"),
    ("data.batch_size=0", "data.batch_size"),
    ("resume=/no/such.ckpt", "resume"),
    ("strategy.name=fsdp9", "strategy.name"),
    ("checkpoint.every_n_train_steps=0", "checkpoint.every_n_train_steps"),
    ("checkpoint.keep_every_n_train_steps=-2", "checkpoint.keep_every_n_train_steps"),
    # before: tracebacks (float('abc'), Lightning's and the template registry's own errors after data loading)
    ("mof=additive mof.alpha=abc", "mof.alpha"),
    ("stage.optimizer.lr=abc", "stage.optimizer.lr"),
    ("data.batch_size=x", "data.batch_size"),
    ("trainer.max_steps=1.5", "trainer.max_steps"),
    ("data.template=bogus", "data.template"),
    ("trainer.precision=bogus", "trainer.precision"),
    ("model.threads=0", "model.threads"),
])
def test_config_errors_name_the_key(tmp_path, data_dir, override, key):
    with pytest.raises(ConfigError, match=rf"^{key}: expected"):
        train(train_cfg(tmp_path, data_dir, override.split()))


def test_config_error_is_one_line_before_weights_load(tmp_path):
    proc = run_script(["train.py", "mof=additive", "mof.alpha=3", f"hydra.run.dir={tmp_path}", "logger=none"], check=False)
    assert proc.returncode != 0
    assert "mof.alpha: expected a number in [0, 1], got 3" in proc.stderr


def test_missing_real_weights_fail_fast_with_guidance(tmp_path, data_dir):
    t0 = time.time()
    with pytest.raises(FileNotFoundError, match=r"lmsys/vicuna-7b-v1.5.*local directory"):
        train(train_cfg(tmp_path, data_dir, ["model=llava15_7b"]))
    assert time.time() - t0 < 30


def test_print_config(tmp_path):
    proc = run_script(["train.py", "--cfg", "job", "mof=additive", f"hydra.run.dir={tmp_path}"])
    assert "type: additive" in proc.stdout and "stage:" in proc.stdout


@pytest.mark.slow
def test_sweep_runs_one_job_per_value_and_survives_a_failed_job(tmp_path, data_dir):
    """The paper's alpha sweep in small, each job scoring two benchmarks, then its trade-off table."""
    proc = run_script(["train.py", "-m", "mof=additive", "mof.alpha=0,1", "stage.optimizer.lr=1e-3,-1", *FAST,
                       "trainer.max_steps=2", "evaluate_after=[synthetic,synthetic_pope]", f"paths.data_dir={data_dir}",
                       f"hydra.sweep.dir={tmp_path}"])
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    exports = [j for j in jobs if (j / "export" / "config.json").exists()]
    failed = [j for j in jobs if (j / "error.txt").exists()]
    assert len(exports) == 2 and len(failed) == 2, proc.stdout[-2000:]
    alphas = sorted(json.loads((j / "export" / "config.json").read_text())["fusion"]["alpha"] for j in exports)
    assert alphas == [0.0, 1.0]
    assert "stage.optimizer.lr" in (failed[0] / "error.txt").read_text()
    for j in exports:
        assert json.loads((j / "eval_synthetic_pope" / "results.json").read_text())["num_questions"] == 48
    run_script(["-m", "mof.report", "tradeoff", str(tmp_path), "--out", str(tmp_path / "report")])
    rows = json.loads((tmp_path / "report" / "tradeoff.json").read_text())
    scored = [r for r in rows if "synthetic pair accuracy" in r]
    assert sorted(r["mof.alpha"] for r in scored) == [0.0, 1.0] and all("synthetic_pope f1" in r for r in scored)
    table = (tmp_path / "report" / "tradeoff.md").read_text()
    assert table.startswith("| mof.alpha | synthetic pair accuracy | synthetic_pope f1 |")
    assert (tmp_path / "report" / "tradeoff.png").stat().st_size > 1000


def test_default_training_config_is_the_documented_default(tmp_path, data_dir):
    from helpers import compose_cfg

    cfg = compose_cfg("train", tmp_path, data_dir)
    assert cfg.model.config._target_.endswith("tiny_config") and cfg.mof.type == "interleaved"
    assert cfg.data._target_ == "mof.data.MofDataModule" and cfg.logger.offline is True
    assert list(cfg.evaluate_after) == ["synthetic"]


def test_small_default_run_end_to_end_with_evaluation(tmp_path, data_dir):
    cfg = train_cfg(tmp_path, data_dir, ["evaluate_after=synthetic", "trainer.max_steps=4", "logger=csv"])
    metrics = train(cfg)
    results = json.loads((tmp_path / "eval_synthetic" / "results.json").read_text())
    assert results["num_questions"] == 36 and results["num_pairs"] == 18
    assert metrics["eval/synthetic/pair_accuracy"] == results["pair_accuracy"]
    assert len(results["per_pattern"]) == 9
    assert list((tmp_path / "csv").rglob("metrics.csv"))


def test_wandb_logger_records_offline_by_default(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = train_cfg(tmp_path, data_dir, ["logger=wandb", "trainer.max_steps=2", "export=false"])
    assert cfg.logger.offline is True
    train(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs and runs[0].stat().st_size > 0


@pytest.mark.slow
def test_resumed_run_logs_into_the_same_wandb_run_and_says_where(tmp_path, data_dir):
    args = ["train.py", *FAST, "logger=wandb", "evaluate_after=null", "export=false", "trainer.max_steps=4",
            f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path}"]
    run_script([*args, "stop_at_step=2"])
    done = run_script([*args, "resume=auto"])
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    run_id = (tmp_path / "wandb_run_id").read_text()
    assert len(runs) == 2 and all(r.name.endswith("-" + run_id) for r in runs)  # before: a second run, a split curve
    assert f"run: {tmp_path} (checkpoints/last.ckpt)" in done.stdout
    assert f"upload it with: wandb sync {runs[-1]}" in done.stdout
    assert "resumable" not in done.stderr and "eval mode" not in done.stderr  # Lightning's two wrong warnings


def test_logged_learning_rate_follows_warmup_then_cosine(tmp_path, data_dir):
    steps, warmup_ratio, lr = 10, 0.2, 2e-3
    cfg = train_cfg(tmp_path, data_dir, ["logger=csv", f"trainer.max_steps={steps}", "export=false",
                                         f"stage.scheduler.warmup_ratio={warmup_ratio}", f"stage.optimizer.lr={lr}"])
    train(cfg)
    rows = list(csv.DictReader(open(next((tmp_path / "csv").rglob("metrics.csv")))))
    column = next(c for c in rows[0] if c.startswith("lr-") and "projector" in c)
    logged = [float(r[column]) for r in rows if r.get(column)]
    warmup = math.ceil(warmup_ratio * steps)
    expected = [lr * s / warmup if s < warmup else lr * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup)))
                for s in range(steps)]
    assert len(logged) == steps
    for got, want in zip(logged, expected):
        assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12), (logged, expected)
    assert max(logged) == pytest.approx(lr)
    # Lightning's ThroughputMonitor (real tokens as its items), mof's padding share, Lightning's grad_norm
    later = [r for r in rows if r.get("train/device/items_per_sec")]   # once its 10-batch window is full
    assert later and all(float(r["train/device/items_per_sec"]) > float(r["train/device/samples_per_sec"]) > 0
                         for r in later)
    assert all(0 <= float(r["perf/padding_fraction"]) < 1 for r in rows if r.get("perf/padding_fraction"))
    assert all(float(r["train/grad_norm"]) > 0 for r in rows if r.get("train/grad_norm"))


@pytest.mark.slow
def test_optuna_study_records_failed_trials_and_resumes_from_sqlite(tmp_path, data_dir):
    import optuna

    args = ["train.py", "-m", "hparams_search=amof_alpha", "stage.optimizer.lr=choice(0.002,-1)", *FAST, "trainer.max_steps=2",
            "export=false", f"paths.data_dir={data_dir}", f"hydra.sweep.dir={tmp_path}"]
    run_script([*args, "hydra.sweeper.n_trials=3"])
    study = optuna.load_study(study_name="train", storage=f"sqlite:///{tmp_path}/optuna.db")
    states = [t.state.name for t in study.trials]
    assert len(states) == 3 and "COMPLETE" in states and "FAIL" in states, states  # a failed job: a failed trial
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    assert failed.params["stage.optimizer.lr"] == -1 and (tmp_path / str(failed.number) / "error.txt").exists()
    best = study.best_trial
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # the metric is a score
    assert best.params["stage.optimizer.lr"] == 0.002 and 0.0 <= best.params["mof.alpha"] <= 1.0
    assert best.value == json.loads((tmp_path / str(best.number) / "eval_synthetic" / "results.json").read_text())["pair_accuracy"]
    run_script([*args, "hydra.sweeper.n_trials=4"])  # the same study, one more trial
    study = optuna.load_study(study_name="train", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == 4 and (tmp_path / "3").is_dir()
    assert "best_params" in (tmp_path / "optimization_results.yaml").read_text()


def test_progress_bar_counts_the_runs_steps_in_80_columns(tmp_path, data_dir):
    proc = run_script(["train.py", *FAST, "trainer.enable_progress_bar=true", "trainer.max_steps=3", "export=false",
                       "evaluate_after=null", f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path}"])
    lines = [x for x in proc.stdout.replace("\r", "\n").splitlines() if "steps [" in x]
    assert lines and "3/3 steps" in lines[-1] and lines[-1].startswith("epoch 1/3")  # not per epoch, counted from 1
    assert max(len(x.rstrip()) for x in lines) <= 80


def test_a_seed_trains_the_same_weights_whatever_the_machines_core_count(tmp_path, data_dir):
    """The tiny preset pins torch's CPU threads for the run (`model.threads: 1`): the order of float sums depends on
    the thread count, so without the pin a seed's run differs between a 1-core and a 2-core machine (here: torch set
    to 1 and to 2 threads before the run) and, over 1000 steps, its score by up to 16 points (docs/miniature.md)."""
    runs = {}
    before = torch.get_num_threads()
    try:
        for cores in (1, 2):
            torch.set_num_threads(cores)   # what torch picks by default on a machine with that many cores
            train(train_cfg(tmp_path / f"cores{cores}", data_dir, ["trainer.max_steps=6", "export=false"]))
            runs[cores] = _trainable(tmp_path / f"cores{cores}")
            assert torch.get_num_threads() == cores   # pinned for the run only
    finally:
        torch.set_num_threads(before)
    assert runs[1].keys() == runs[2].keys() and len(runs[1]) > 10
    for k in runs[1]:
        assert torch.equal(runs[1][k], runs[2][k]), k
