"""The quickstart's thread count and the study's arrangement, as wall clock: two quickstart runs of `--steps` steps
(seeds 0 and 1) one after the other with a thread per core (`model.threads=null`, torch's default), one after the
other with one thread each (the tiny preset's `model.threads: 1`), and side by side with one thread each (what
`reproduce.py parallel=2` does on a 2-core machine). Small models use a second thread poorly, so the tiny preset
pins one (the same sums on any core count) and the study runs two at a time.

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


def train(run_dir: Path, seed: int, steps: int, threads: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", f"trainer.max_steps={steps}", "evaluate_after=null",
                             "export=false", "logger=csv", f"seed={seed}", f"model.threads={threads}",
                             f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one_after_the_other(tmp: Path, name: str, steps: int, threads: str) -> float:
    t0 = time.perf_counter()
    for seed in (0, 1):
        assert train(tmp / f"{name}{seed}", seed, steps, threads).wait() == 0
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        every_core = one_after_the_other(tmp, "cores", args.steps, "null")
        one_thread = one_after_the_other(tmp, "one", args.steps, "1")
        t0 = time.perf_counter()
        procs = [train(tmp / f"side{seed}", seed, args.steps, "1") for seed in (0, 1)]
        assert all(proc.wait() == 0 for proc in procs)
        side = time.perf_counter() - t0
    record(f"The quickstart's threads and the study's trainings: one after the other or side by side ({args.steps} steps each)",
           table(["arrangement", "wall clock s", "ratio"],
                 [[f"two runs one after the other, {cores} threads each (model.threads=null)", f"{every_core:.1f}", "1.00"],
                  ["two runs one after the other, 1 thread each (the tiny preset)", f"{one_thread:.1f}",
                   f"{one_thread / every_core:.2f}"],
                  ["two runs side by side, 1 thread each (reproduce.py parallel=2)", f"{side:.1f}",
                   f"{side / every_core:.2f}"]]),
           "Each run starts its own process (imports, data, model) as the study's steps do. The thread count changes "
           "the order of floating-point sums, hence the tiny preset pins it: the three arrangements train the same "
           "weights but for the first one.")


if __name__ == "__main__":
    main()
