"""A finished study's MLLMs scored again on mined benchmarks from fresh pools: the study mines one 720-image pool,
whose benchmark holds 10 pairs in the shipped study, so one pair moves a seed's score by 10 points. A larger pool
does not give more pairs: with `k` neighbours searched per image, the images of the same content crowd a pair's
other image out of them (a pool of 3600 images gave 4 benchmark pairs in the 13th stop). So here the study's mining
is repeated on pools of the study's size drawn from other seeds, each scored against its attribute side file and
written as an MMVP-style benchmark as the study writes its own, and every exported MLLM of the study
(`mllm/<fusion>/seed<N>/export`) is evaluated on each with `evaluate.py`; a model's score is its correct pairs over
all the pools' pairs. Nothing is trained.

    python reproduce.py train_data=synthetic_rare hydra.run.dir=outputs/reproduce-rare
    python bench/miniature_rescore.py outputs/reproduce-rare --seeds 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT
from mof.data.synthetic import write_once, written
from mof.study.mining import encoder_refs, mine_args, score_pairs, write_mined_benchmark, write_pool


def quiet(args: list[str], threads: int | None = None) -> None:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=env)
    if proc.returncode:
        sys.exit(f"{args[0]} failed:\n{proc.stderr[-2000:]}")


def mined_benchmark(recipe: dict, out: Path, seed: int, scenes: int) -> tuple[dict, Path]:
    """The study's steps 2 and 3 on a pool of `seed`: the mining's score and the benchmark's folder."""
    m = recipe["mining"]
    pool = write_pool(out / "pool", scenes, seed)
    run = out / "mining"
    if not (run / "summary.json").exists():
        quiet(mine_args(pool / "images", run, encoder_refs(recipe["encoders"]), m))
    cap = recipe["benchmark_pairs_per_pattern"]
    bench = write_once(out / "benchmark", {"pairs_per_pattern": cap, "version": 1},
                       lambda d: write_mined_benchmark(d, run / "pairs.csv", pool, cap))
    return score_pairs(run / "pairs.csv", pool), bench


def evaluate(export: Path, bench: Path, out: Path) -> dict:
    if not (out / "results.json").exists():
        quiet(["evaluate.py", "benchmark=mmvp", f"checkpoint={export}", f"benchmark.root={bench}",
               f"hydra.run.dir={out}"], threads=1)
    return json.loads((out / "results.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="the pools' seeds (the study's: 0)")
    ap.add_argument("--scenes-per-pattern", type=int, default=None, help="default: the study's")
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args()
    study = args.study.resolve()
    recipe = json.loads((study / "study.json").read_text())
    scenes = args.scenes_per_pattern or recipe["mining"]["scenes_per_pattern"]
    out = study / "rescore"
    benches, minings = {}, {}
    for seed in args.seeds:
        minings[seed], bench = mined_benchmark(recipe, out / f"pool{seed}-{scenes}", seed, scenes)
        info = written(bench)
        s = minings[seed]
        print(f"pool seed {seed} ({scenes} scenes a pattern): {s['pairs']} mined, {s['true_pairs']} differ in one "
              f"property {s['properties']}; benchmark {info['pairs']} pairs {info['per_pattern']}", flush=True)
        if info["pairs"]:
            benches[seed] = bench

    exports = sorted(study.glob("mllm/*/seed*/export"))
    jobs = [(e, seed, b) for e in exports for seed, b in benches.items()]
    print(f"evaluating {len(exports)} MLLMs on {len(benches)} benchmarks, {args.parallel} at a time", flush=True)
    with ThreadPoolExecutor(args.parallel) as ex:
        results = list(ex.map(lambda j: evaluate(j[0], j[2], out / "eval" / f"pool{j[1]}" / j[0].parent.parent.name
                                                 / j[0].parent.name), jobs))
    pairs: dict[str, dict] = {}
    for (e, _, _), r in zip(jobs, results):
        n = pairs.setdefault(e.parent.parent.name, {}).setdefault(e.parent.name, [0, 0])
        n[0], n[1] = n[0] + r["num_correct_pairs"], n[1] + r["num_pairs"]
    scores = {f: {s: 100 * c / n for s, (c, n) in by_seed.items()} for f, by_seed in pairs.items()}
    total = sum(written(b)["pairs"] for b in benches.values())
    print(f"\npair accuracy on {total} mined pairs of {len(benches)} pools (mean ± std over the study's seeds):")
    for fusion, by_seed in scores.items():
        v = list(by_seed.values())
        print(f"  {fusion:<15} {statistics.fmean(v):5.1f} ± {statistics.stdev(v) if len(v) > 1 else 0:4.1f}  "
              + " ".join(f"{x:.1f}" for x in v))
    (out / "summary.json").write_text(json.dumps({"pools": {str(k): v for k, v in minings.items()},
                                                  "pairs": total, "scores": scores}, indent=1))
    print(f"\nresults: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
