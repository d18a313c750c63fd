"""`reproduce(cfg)`: the body of `reproduce.py`. Every step runs the command a user would type (`evaluate.py`,
`mine.py`, `train.py`) in its own folder under the study folder and is skipped when its results are there, so a
killed study continues where it stopped (a killed training run resumes from its checkpoint)."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf

from ..conf import options
from ..errors import ConfigError, MofError, unknown
from ..data.patterns import PATTERNS
from ..data.synthetic import write_once, written
from ..evaluation.report import pattern_correlation, pattern_scores, read_results
from ..mining.settings import positive_int, require
from ..model.presets import tiny_encoder
from .mining import (encoder_refs, pair_breakdown_of, mine_args, scene_cosines, score_pairs, write_mined_benchmark,
                     write_pool)
from .plots import plot_correlation, plot_fusions, plot_tradeoff

ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout: train.py, evaluate.py, mine.py


class StudyStepFailed(MofError):
    pass


class Study:
    def __init__(self, cfg):
        self.cfg = cfg
        self.out = Path(cfg.paths.output_dir)
        self.data_dir = str(cfg.paths.data_dir)
        self.t0 = time.perf_counter()
        self.lock = threading.Lock()   # steps may run side by side (`parallel`): one writer of timing.json at a time
        self.ran = False               # whether this invocation computed a step (or found them all cached)

    def say(self, text: str) -> None:
        print(f"[{(time.perf_counter() - self.t0) / 60:5.1f} min] {text}", flush=True)

    def run(self, name: str, args: list[str], done: Path, env: dict | None = None) -> Path:
        """`python <args>` (with `env` added to the environment) unless `done` exists; its console goes to
        `<study>/logs/<name>.log`."""
        if done.exists():
            self.say(f"{name}: cached ({done.parent})")
            return done
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.say(f"{name}: running (log {log})")
        t0 = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.run([sys.executable, *args, f"paths.data_dir={self.data_dir}"], cwd=ROOT, stdout=f,
                                  stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        if proc.returncode != 0 or not done.exists():
            raise StudyStepFailed(f"{name} failed (exit {proc.returncode}); see {log}")
        with self.lock:
            self.ran = True
            timing = self.out / "timing.json"  # each step's minutes, kept across the invocations that computed them
            steps = json.loads(timing.read_text()) if timing.exists() else {}
            timing.write_text(json.dumps({**steps, name: (time.perf_counter() - t0) / 60}, indent=1))
        self.say(f"{name}: done")
        return done

    def minutes_spent(self) -> float:
        """The wall clock the study has cost: the invocations that computed a step, this one included. A study
        finished from its cache costs nothing more (before, its `minutes` said a few seconds)."""
        path = self.out / "invocations.json"
        spent = json.loads(path.read_text()) if path.exists() else []
        if self.ran:
            spent.append((time.perf_counter() - self.t0) / 60)
            path.write_text(json.dumps(spent))
        return sum(spent)

    def run_all(self, steps: list[tuple[str, list[str], Path]], parallel: int) -> None:
        """The steps, `parallel` at a time, the CPU's cores shared among them (each run's OpenMP threads: cores /
        parallel; the tiny preset pins torch's to one anyway, `model.threads`, so the figures do not depend on
        `parallel`). Small models use a second thread poorly, so two one-thread runs side by side finish sooner
        than two runs one after the other (BENCHMARKS.md). A failed step fails the study once the steps running
        beside it end."""
        env = {}
        if parallel > 1:
            threads = str(max(1, (os.cpu_count() or 1) // parallel))
            env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = [pool.submit(self.run, *step, env) for step in steps]
        for f in futures:
            f.result()


# What a study folder's cached steps were computed with: a rerun in the same folder must ask for the same (seeds and
# fusions may be added; an existing fusion's overrides may not change).
RECIPE = ("encoders", "seed", "train_data", "pairs_per_pattern", "mining", "benchmark_pairs_per_pattern", "train_overrides")


def weights_digest(folder: str) -> str | None:
    """sha256 of a local encoder folder's weights (None for a hub id): a folder re-trained in place (`pretrain.py
    out=... overwrite=true`) is another encoder under the same name."""
    files = sorted(Path(folder).glob("*.safetensors")) if Path(folder).is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def check_recipe(out: Path, cfg) -> None:
    """Record the recipe in `out/study.json`, or refuse (naming the key) a rerun that asks for another one: its
    cached steps would be silently mixed with new ones."""
    path = out / "study.json"
    now = {k: OmegaConf.to_container(cfg[k]) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in RECIPE}
    now["fusions"] = OmegaConf.to_container(cfg.fusions)
    folders = {kind: tiny_encoder(kind, str(cfg.encoders[kind])) for kind in ("clip", "dino")}
    now["weights"] = {kind: weights_digest(folder) for kind, folder in folders.items()}
    before = json.loads(path.read_text()) if path.exists() else {}
    for key in RECIPE:
        if key in before and before[key] != now[key]:
            raise ConfigError(f"{key}: the study in {out} was made with {before[key]!r}, not {now[key]!r}; "
                              f"rerun with those values to continue it, or give another hydra.run.dir")
    changed = [kind for kind, digest in before.get("weights", {}).items() if now["weights"].get(kind) != digest]
    if changed:
        raise ConfigError(f"weights: the {' and '.join(changed)} weights at {', '.join(folders[k] for k in changed)} "
                          f"changed since the study in {out} was made (trained again in place?); give another "
                          f"hydra.run.dir, or remove {out} to start over")
    for name, overrides in now["fusions"].items():
        if before.get("fusions", {}).get(name, overrides) != overrides:
            raise ConfigError(f"fusions.{name}: the study in {out} trained it with {before['fusions'][name]!r}, not "
                              f"{overrides!r}; give the new one another name, or another hydra.run.dir")
    path.write_text(json.dumps({**now, "fusions": {**before.get("fusions", {}), **now["fusions"]}}, indent=1))


def reproduce(cfg) -> dict:
    study = Study(cfg)
    out, c = study.out, cfg
    data_options = options("data")
    if c.train_data not in data_options:   # found before any step runs, not by the first training
        raise ConfigError(unknown("train_data", "data option", c.train_data, data_options))
    require(c, "mining.k", lambda k: k == "all" or positive_int(k), "a positive integer or all")   # before any step
    fusions = trained_fusions(c)
    out.mkdir(parents=True, exist_ok=True)
    check_recipe(out, c)
    pairs_pp = f"benchmark.synthetic.pairs_per_pattern={c.pairs_per_pattern}"
    enc = encoder_refs(c.encoders)

    # 1. The tiny CLIP on MMVP-VLM: which patterns is it blind to?
    study.run("clip_vlm", ["evaluate.py", "benchmark=synthetic_vlm", f"checkpoint={tiny_encoder('clip', enc['clip'])}",
                           f"hydra.run.dir={out / 'clip_vlm'}", pairs_pp], out / "clip_vlm" / "results.json")
    clip = pattern_scores(read_results(out / "clip_vlm"))

    # 2. Mining a fresh pool with the tiny CLIP and DINO; scored against the pool's attribute side file.
    m = c.mining
    pool = write_pool(out / "mining" / "pool", m.scenes_per_pattern, c.seed)
    study.run("mine", mine_args(pool / "images", out / "mining" / "run", enc, m), out / "mining" / "run" / "summary.json")
    mining = score_pairs(out / "mining" / "run" / "pairs.csv", pool)
    shards = json.loads((out / "mining" / "run" / "summary.json").read_text())["shards"]
    mining["scene_cosines"] = scene_cosines(out / "mining" / "run" / "embeddings", shards, pool)
    mining["breakdown"] = pair_breakdown_of(out / "mining" / "run", pool)
    clip_same, both = mining["breakdown"]["clip_same"], mining["breakdown"]["mined"]
    study.say(f"mining: {mining['pairs']} pairs, precision {_pct(mining['precision'])}, properties {mining['properties']}; "
              f"of every pair, the CLIP calls the same {clip_same['true']} true, {clip_same['false']} false and "
              f"{clip_same['one_content']} of one content, the DINO different {both['true']}, {both['false']} and "
              f"{both['one_content']} of them")

    # 3. An MMVP-style benchmark from the mined pairs (held out: the pool shares no scene with training).
    #    Written whole or not at all (a study killed while writing it makes it again, rather than finding half of it).
    bench = write_once(out / "benchmark", {"pairs_per_pattern": c.benchmark_pairs_per_pattern, "version": 1},
                       lambda d: write_mined_benchmark(d, out / "mining" / "run" / "pairs.csv", pool,
                                                       c.benchmark_pairs_per_pattern))
    info = written(bench)
    study.say(f"benchmark: {info['pairs']} mined pairs {info['per_pattern']}")
    if info["pairs"] == 0:
        raise StudyStepFailed("the mining found no pair that differs in one property: no benchmark to score")

    # 4. MLLMs on the frozen encoders, each fusion over the seeds, `parallel` trainings at a time.
    runs, steps = {}, []
    for fusion, overrides in fusions.items():
        for seed in c.seeds:
            run_dir = out / "mllm" / fusion / f"seed{seed}"
            resume = ["resume=auto"] if (run_dir / "checkpoints").exists() and not (run_dir / "export").exists() else []
            steps.append((f"{fusion}-seed{seed}", ["train.py", f"data={c.train_data}", *overrides, f"seed={seed}",
                                                   f"hydra.run.dir={run_dir}",
                                                   "evaluate_after=[mmvp,synthetic]", f"benchmarks.mmvp.root={bench}",
                                                   f"synthetic_benchmark.pairs_per_pattern={c.pairs_per_pattern}",
                                                   "logger=csv", f"model.config.encoders.clip={enc['clip']}",
                                                   f"model.config.encoders.dino={enc['dino']}", *c.train_overrides,
                                                   *resume],
                          run_dir / "eval_synthetic" / "results.json"))
            runs.setdefault(fusion, []).append(run_dir)
    study.run_all(steps, c.parallel)

    summary = analyse(c, clip, mining, info, runs, study.minutes_spent())
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    study.say(f"done: {out / 'summary.json'}, {out / 'correlation.png'}, {out / 'tradeoff.png'}, {out / 'fusions.png'}")
    return summary


def trained_fusions(c) -> dict:
    """`fusions`, or those named by `only` (in the order of `fusions`: the longest first); an unknown name is
    refused, naming the known ones and the nearest."""
    if c.get("only") is None:
        return dict(c.fusions)
    names = [c.only] if isinstance(c.only, str) else list(c.only)
    for name in names:
        if name not in c.fusions:
            raise ConfigError(unknown("only", "fusion", name, c.fusions))
    return {name: overrides for name, overrides in c.fusions.items() if name in names}


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def analyse(c, clip: dict, mining: dict, info: dict, runs: dict, minutes: float) -> dict:
    seen = [p for p in PATTERNS if clip.get(p, 0.0) >= c.seen_threshold]  # measured, never read from a config
    blind = [p for p in PATTERNS if p in clip and p not in seen]
    mllm = {}
    for fusion, dirs in runs.items():
        mined = [read_results(d / "eval_mmvp") for d in dirs]
        synthetic = [read_results(d / "eval_synthetic") for d in dirs]
        per_seed = [pattern_scores(s) for s in synthetic]
        instruction = [statistics.fmean(p[q] for q in seen) for p in per_seed] if seen else []
        mllm[fusion] = {
            "benchmark": {**_mean_std([r["pair_accuracy"] for r in mined]),
                          "per_pattern": _mean_patterns([pattern_scores(r) for r in mined])},
            "synthetic": {**_mean_std([r["pair_accuracy"] for r in synthetic]), "per_pattern": _mean_patterns(per_seed)},
            "instruction": _mean_std(instruction) if instruction else None,
        }
    out = Path(c.paths.output_dir)
    baseline = mllm.get(c.baseline, {}).get("synthetic", {}).get("per_pattern", {})
    r, common = pattern_correlation(clip, {p: v["mean"] for p, v in baseline.items()})
    summary = {
        "clip_vlm": {"per_pattern": clip, "average": statistics.fmean(clip.values()), "blind": blind, "seen": seen},
        "mining": mining, "benchmark": info, "mllm": mllm,
        "correlation": {"pearson_r": r, "patterns": common,
                        "between": f"tiny CLIP on synthetic_vlm vs '{c.baseline}' MLLM on the synthetic benchmark"},
        "seeds": list(c.seeds), "minutes": minutes,  # the invocations that computed steps (`Study.minutes_spent`)
        "step_minutes": json.loads(timing.read_text()) if (timing := out / "timing.json").exists() else {},
        "config": OmegaConf.to_container(c, resolve=False),
    }
    plot_correlation(clip, baseline, summary["correlation"]["pearson_r"], out / "correlation.png")
    plot_tradeoff(c.fusions, mllm, out / "tradeoff.png")
    plot_fusions(mllm, out / "fusions.png")
    return summary


def _mean_patterns(per_seed: list[dict]) -> dict:
    keys = [p for p in PATTERNS if all(p in s for s in per_seed)]
    return {p: _mean_std([s[p] for s in per_seed]) for p in keys}
