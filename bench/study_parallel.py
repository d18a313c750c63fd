"""The study's trainings one after the other (all cores each, as `parallel: 1`) against side by side (the cores
shared, as `parallel: 2`): two quickstart runs of `--steps` steps, seeds 0 and 1, wall clock of each arrangement.
Small models use two threads poorly, which is why `reproduce.py` runs two at a time on a 2-core machine.

    python bench/study_parallel.py [--steps 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, record, table


def train(run_dir: Path, seed: int, steps: int, threads: int | None) -> subprocess.Popen:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})}
    return subprocess.Popen([sys.executable, "train.py", f"trainer.max_steps={steps}", "evaluate_after=null",
                             "export=false", "logger=csv", f"seed={seed}", f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for seed in (0, 1):
            assert train(Path(tmp) / f"alone{seed}", seed, args.steps, None).wait() == 0
        alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        procs = [train(Path(tmp) / f"side{seed}", seed, args.steps, max(1, cores // 2)) for seed in (0, 1)]
        assert all(proc.wait() == 0 for proc in procs)
        side = time.perf_counter() - t0
    record(f"The study's trainings: one after the other or side by side ({args.steps} steps each)",
           table(["arrangement", "wall clock s", "ratio"],
                 [[f"two runs one after the other, {cores} threads each", f"{alone:.1f}", "1.00"],
                  [f"two runs side by side, {max(1, cores // 2)} thread(s) each", f"{side:.1f}", f"{side / alone:.2f}"]]),
           "Each run starts its own process (imports, data, model) as the study's steps do. One thread gives "
           "slightly different floating-point sums than two, so a study's figures depend on `parallel`.")


if __name__ == "__main__":
    main()
