"""The command-line tools beside train.py and evaluate.py: estimate, data check, experiments, bench/gpu.py."""

import json
import os

import pytest

from helpers import ROOT, SMALL_DATA, compose_cfg, run_script
from mof.estimate import count, model_state_bytes, report
from mof.training.from_config import model_config_from


def test_estimate_counts_and_memory(tmp_path, data_dir):
    cfg = compose_cfg("train", tmp_path, data_dir, ["model=llava15_7b", "mof=interleaved", "stage=finetune",
                                                     "strategy=deepspeed_zero3", "trainer.devices=8"])
    rows = dict((name, (n, t)) for name, n, t in count(cfg))
    assert rows["llm"] == (6_738_415_616, 6_738_415_616)  # Vicuna-7B
    assert rows["vision[1] dinov2"][1] == 0 and rows["projectors"][0] == 2 * (1024 * 4096 + 4096 + 4096 * 4096 + 4096)
    text = report(cfg)
    assert "deepspeed_zero3" in text and "<- strategy" in text
    total, trainable = 1_000, 400
    assert model_state_bytes(total, trainable, "ddp", 4)["gpu"] == 2 * total + 14 * trainable
    assert model_state_bytes(total, trainable, "deepspeed_zero3", 4)["gpu"] == (2 * total + 14 * trainable) / 4
    lora = compose_cfg("train", tmp_path, data_dir, ["model=llava15_7b", "stage=lora", "stage.lora.r=8"])
    lora_rows = dict((name, (n, t)) for name, n, t in count(lora))
    # r (in + out) for q, k, v, o (4096 x 4096), gate, up (4096 -> 11008), down (11008 -> 4096), 32 layers
    assert lora_rows["lora"][0] == 32 * 8 * (4 * 8192 + 3 * (4096 + 11008)) and lora_rows["llm"][1] == 0


def test_data_report_writes_report(tmp_path, data_dir):
    proc = run_script(["-m", "mof.training.data_report", f"paths.data_dir={data_dir}", *SMALL_DATA, f"hydra.run.dir={tmp_path}"])
    report_ = json.loads((tmp_path / "report.json").read_text())
    assert report_["total"] == report_["valid"] == 144 and report_["skipped"] == {} and report_["fully_masked"] == 0
    assert report_["token_length"]["p50"] > 128  # 128 visual tokens (interleaved) + text
    assert "[[ (a)</s>]]" in proc.stdout or "[[ (b)</s>]]" in proc.stdout
    assert "<image x128>" in proc.stdout


@pytest.mark.parametrize("experiment,tokens,stage,strategy", [
    ("llava15_imof_stage1", 1152, "pretrain", "deepspeed_zero2"),
    ("llava15_imof_stage2", 1152, "finetune", "deepspeed_zero3"),
    ("llava15_imof_lora", 1152, "lora", "deepspeed_zero3"),
    ("llava_amof_stage2", 576, "finetune", "deepspeed_zero3"),
])
def test_paper_experiments_compose(tmp_path, data_dir, experiment, tokens, stage, strategy):
    cfg = compose_cfg("train", tmp_path, data_dir, [f"experiment={experiment}"])
    assert model_config_from(cfg).num_visual_tokens == tokens
    assert cfg.stage.name == stage and cfg.strategy.name == strategy
    assert cfg.trainer.precision == "bf16-mixed" and cfg.model.load_pretrained
    global_batch = cfg.data.batch_size * cfg.trainer.devices
    assert global_batch == {"pretrain": 256}.get(stage, 128)


def _bench_copy(tmp_path):
    import shutil

    (tmp_path / "bench").mkdir()
    for f in ("gpu.py", "common.py", "packing.py", "mining.py", "mining_embed.py", "mining_recall.py", "mining_memory.py"):
        shutil.copy(ROOT / "bench" / f, tmp_path / "bench" / f)


def test_gpu_bench_runs_the_training_step_on_cpu_with_tiny_config(tmp_path):
    _bench_copy(tmp_path)
    run_script(["bench/gpu.py", "--tiny", "--steps", "3", "--skip", "1", "--max-length", "400", "--modes",
                "padded, full loss", "packed, full loss", "padded, chunked loss",
                "padded, fused AdamW, checkpoint 50% of layers", "packed 4096, FlexAttention"], cwd=tmp_path)
    log = (tmp_path / "BENCHMARKS.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in log.splitlines() if line.startswith("| p")}
    ran = {"padded, full loss", "packed, full loss", "padded, chunked loss", "padded, fused AdamW, checkpoint 50% of layers"}
    assert set(rows) == ran | {"packed 4096, FlexAttention"}
    assert all(float(rows[mode][0]) > 0 for mode in ran)  # real tokens/s of each mode
    assert "not run: speed.attention=flex_attention: FlexAttention has no backward pass on CPU" in rows["packed 4096, FlexAttention"][0]
    assert float(rows["packed, full loss"][1].strip(" %")) < float(rows["padded, full loss"][1].strip(" %"))  # padding
    assert "samples/s per A100" in log


def test_packing_bench_compares_modes_on_the_same_samples(tmp_path):
    _bench_copy(tmp_path)
    run_script(["bench/packing.py", "--samples", "16", "--batch", "8", "--rounds", "1", "--max-length", "400"],
               cwd=tmp_path)
    log = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| padded, random order |" in log and "| packed, random order |" in log and "1.00 |" in log


def test_mining_benches_run_small(tmp_path):
    _bench_copy(tmp_path)
    run_script(["bench/mining.py", "--n", "5000", "--n-large", "8000", "--queries", "50", "--nlist", "8",
                "--nprobe", "2", "8", "--pq-m", "16", "--recall-queries", "20"], cwd=tmp_path)
    log = (tmp_path / "BENCHMARKS.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in log.splitlines() if line.startswith("| ")}
    assert {"exact", "ivf, nprobe 2", "ivf, nprobe 8", "ivf-pq, nprobe 2", "ivf-pq, nprobe 8"} <= set(rows)
    assert float(rows["ivf, nprobe 8"][5]) == 1.0  # every list probed: IVF-Flat finds the exact neighbours
    run_script(["bench/mining_embed.py", "--tiny", "--steps", "2", "--batch", "8"], cwd=tmp_path)
    assert "| tiny pre-trained (64 px) | cpu | 8 |" in (tmp_path / "BENCHMARKS.md").read_text()


@pytest.mark.parametrize("tool", ["train", "evaluate", "mine", "pretrain", "reproduce"])
def test_console_scripts_run_from_any_folder(tmp_path, tool):
    """`mof-<tool>` (pyproject.toml's scripts) finds its config in the installed package, not in the checkout."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = shutil.which(f"mof-{tool}", path=str(Path(sys.executable).parent))
    assert script, f"mof-{tool} is not installed beside {sys.executable} (pip install -e .)"
    proc = subprocess.run([script, "--cfg", "hydra"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"name: {tool}\n" in proc.stdout  # the job (and its <job>.log) named after the tool, not after mof/cli.py


@pytest.mark.parametrize("module", ["mof.data.synthetic", "mof.checkpoints.export"])
def test_module_clis_say_their_own_command_and_nothing_else(module):
    """Before: `usage: synthetic.py`, after a RuntimeWarning from runpy (the package had imported the module)."""
    proc = run_script(["-m", module, "--help"])
    assert proc.stdout.startswith(f"usage: python -m {module} ") and proc.stderr == ""


def test_recall_bench_measures_ivf_on_the_tiny_clip_and_its_mixture(tmp_path):
    _bench_copy(tmp_path)
    run_script(["bench/mining_recall.py", "--images", "360", "--n", "20000", "--n-large", "0", "--recall-queries",
                "100", "--nprobe", "1", "1024"], cwd=tmp_path)
    rows = [line.split("|")[1:-1] for line in (tmp_path / "BENCHMARKS.md").read_text().splitlines()
            if line.startswith(("| tiny CLIP", "| mixture"))]
    assert [(r[0].strip(), r[1].strip(), r[3].strip()) for r in rows] == [
        ("tiny CLIP embeddings", "360", "1"), ("tiny CLIP embeddings", "360", "1024"),
        ("mixture fitted to them", "20,000", "1"), ("mixture fitted to them", "20,000", "1024")]
    recalls = [float(r[4]) for r in rows]
    assert recalls[1] >= 0.99 and recalls[3] >= 0.99   # every list probed: exact, up to ties
    assert recalls[0] < recalls[1] and recalls[2] < recalls[3]
    # the stages after embedding on shards written as mine.py writes them, through mining's own code
    run_script(["bench/mining_memory.py", "--images", "360", "--n", "5000", "--nlist", "16", "--shard-size", "512"],
               cwd=tmp_path)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    stages = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "GiB" not in line]
    assert stages[-9] == "list 5,000 images from a text file of paths, a shard at a time to disk"
    assert stages[-8] == "for comparison: the same list held in memory (as mine.py did before)"
    assert stages[-7] == "write shards (float16, as embedding does)"
    assert stages[-6].startswith("load 10 shards (memory-mapped")
    assert stages[-5] == "for comparison: both matrices loaded whole (float32)"
    assert stages[-4].startswith("search: IVF-Flat nlist 16") and stages[-2].startswith("the best 1,000 pairs read back")
    assert stages[-1] == "their 2,000 ids looked up by row (the shards they fall in read, 8 kept)"
    found = [int(s.split("(")[-1].split()[0].replace(",", "")) for s in stages[-4:-2]]
    assert found[0] >= found[1] > 0    # pairs found from both their images are counted once among the blind ones
    recall = float(text.rsplit("nearest neighbours: ", 1)[1].split()[0])
    assert 0.5 <= recall <= 1.0


def test_setup_sh_chooses_torchs_build_by_the_machine(tmp_path):
    """Which torch build setup.sh installs (its dry run installs nothing): CUDA where nvidia-smi lists a GPU, the CPU
    index's where it is reachable, else the configured index's; it says which."""
    import subprocess

    def choose(path_extra=None, index=None):
        env = {k: v for k, v in os.environ.items() if k != "TORCH_CPU_INDEX"}
        env.update(MOF_SETUP_DRY_RUN="1", **({"TORCH_CPU_INDEX": index} if index else {}))
        if path_extra:
            env["PATH"] = f"{path_extra}:{env['PATH']}"
        return subprocess.run(["bash", str(ROOT / "setup.sh")], env=env, capture_output=True, text=True, check=True).stdout

    (tmp_path / "index.html").write_text("")
    assert "no GPU: torch's CPU build (file://" in choose(index=f"file://{tmp_path / 'index.html'}")
    assert "PyTorch's CPU index is out of reach" in choose(index=f"file://{tmp_path / 'nowhere.html'}")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: a test GPU'\n")
    (tmp_path / "bin" / "nvidia-smi").chmod(0o755)
    assert "a GPU is present: torch's CUDA build (PyPI)" in choose(path_extra=tmp_path / "bin")
