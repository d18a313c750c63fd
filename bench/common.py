"""Shared by the benchmarks: alternating timing, medians, and the BENCHMARKS.md log."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / "BENCHMARKS.md"


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def alternate(candidates: dict, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Time each callable `repeats` times, interleaved (A B A B ...) so machine noise hits both alike."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs) -> float:
    return statistics.median(xs)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def record(title: str, body: str, note: str = "") -> None:
    """Print the result and append it, dated, with machine and command, to BENCHMARKS.md."""
    command = "python " + " ".join(sys.argv)
    entry = (f"\n## {title}\n\n{datetime.date.today().isoformat()} · {machine()}\n\n`{command}`\n\n{body}\n"
             + (f"\n{note}\n" if note else ""))
    print(entry)
    if not LOG.exists():
        LOG.write_text("# Benchmarks\n\nAppended by the scripts in `bench/`; the two sides of each comparison run "
                       "alternately in one process, and medians and ratios are quoted.\n")
    with open(LOG, "a") as f:
        f.write(entry)


def tiny_setup(pairs_per_pattern: int, num_workers: int = 0, batch_size: int = 16):
    """The tiny default model's config and a datamodule over fresh synthetic questions."""
    import tempfile

    from mof import tiny_config
    from mof.data import MofDataModule, load_tokenizer
    from mof.data.synthetic import generate

    data = generate(tempfile.mkdtemp() + "/syn/train", pairs_per_pattern=pairs_per_pattern)
    config = tiny_config(vocab_size=544)
    dm = MofDataModule([{"path": str(data / "instruct.json"), "image_root": str(data / "images")}],
                       batch_size=batch_size, num_workers=num_workers).bind(config, load_tokenizer())
    dm.setup()
    return config, dm, data
