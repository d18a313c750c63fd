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


class StepTimer:
    """A Lightning callback: wall time of the steps after the first `skip` (synchronised on a GPU), and the
    samples, real tokens and padded positions they held."""

    def __init__(self, skip: int):
        import lightning.pytorch as pl

        self.skip, self.times, self.samples, self.tokens, self.positions = skip, [], 0, 0, 0
        self._t0 = None
        timer = self

        class _Callback(pl.Callback):
            def on_train_batch_start(self, trainer, module, batch, idx):
                _sync()
                timer._t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, module, outputs, batch, idx):
                _sync()
                if trainer.global_step > timer.skip:
                    timer.times.append(time.perf_counter() - timer._t0)
                    timer.samples += batch["num_samples"]
                    timer.tokens += batch["num_tokens"]
                    timer.positions += batch["input_ids"].numel()

        self.callback = _Callback()

    @property
    def seconds(self) -> float:
        return sum(self.times)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def fit_timed(model, loader, steps: int, skip: int = 2, lr: float = 1e-5, accelerator: str = "cpu",
              fused: bool = False) -> StepTimer:
    """`steps` optimizer steps of the shipped training step (`MofLitModule.training_step` in a Lightning
    `Trainer`) over `loader`; the first `skip` steps warm up and are not timed."""
    import lightning.pytorch as pl

    from mof.training.module import MofLitModule

    timer = StepTimer(skip)
    module = MofLitModule(model, {"lr": lr, "fused": fused}, {"warmup_ratio": 0.0})
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer.callback],
                         gradient_clip_val=1.0, use_distributed_sampler=False, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader)
    return timer


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
