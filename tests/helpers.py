"""Composing the real Hydra configs for tests: tiny data, CPU, a few steps, outputs under tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "mof" / "conf")
SMALL_DATA = ["data.synthetic.pairs_per_pattern=4", "synthetic_benchmark.pairs_per_pattern=2"]
# The synthetic questions alone (no captions), as a dataset list.
QUESTIONS_ONLY = ("data.sources=[{path:${paths.data_dir}/synthetic/train/instruct.json,"
                  "image_root:${paths.data_dir}/synthetic/train/images}]")
FAST = ["logger=none", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "data.num_workers=0",
        "data.batch_size=4", "trainer.log_every_n_steps=1", *SMALL_DATA]


def compose_cfg(config_name: str, run_dir: Path, data_dir: Path, overrides: list[str] = ()):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=config_name, return_hydra_config=True,
                      overrides=[f"hydra.run.dir={run_dir}", f"paths.data_dir={data_dir}", *overrides])
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


def train_cfg(run_dir: Path, data_dir: Path, overrides: list[str] = ()):
    return compose_cfg("train", run_dir, data_dir, [*FAST, "evaluate_after=null", *overrides])


def run_script(args: list[str], cwd: Path = ROOT, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
