"""Framework overhead: mof's Lightning training loop against a bare PyTorch loop over the same model,
data, batches and optimizer. Steady-state throughput (the first steps are not timed).

    python bench/framework_overhead.py [--steps 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import time

import lightning.pytorch as pl
import torch
from common import median, record, table, tiny_setup

from mof import MofForConditionalGeneration
from mof.training.module import MofLitModule

SKIP = 5


class Timer(pl.Callback):
    """Times steps SKIP.. by the step counter (batch_idx restarts every epoch)."""

    def __init__(self):
        self.t0 = self.t1 = None
        self.samples = 0

    def on_train_batch_start(self, trainer, module, batch, idx):
        if trainer.global_step == SKIP and self.t0 is None:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, idx):
        if self.t0 is not None:
            self.samples += batch["num_samples"]
            self.t1 = time.perf_counter()


def lightning_run(model, dm, steps, lr) -> float:
    timer = Timer()
    module = MofLitModule(copy.deepcopy(model), {"lr": lr}, {"warmup_ratio": 0.0})
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                         gradient_clip_val=1.0, use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    return timer.samples / (timer.t1 - timer.t0)


def batches(dm, steps):
    """`steps` batches from the datamodule's loader, epoch after epoch, as the trainer does."""
    loader, n, epoch = dm.train_dataloader(), 0, 0
    while True:
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            if n == steps:
                return
            yield batch
            n += 1
        epoch += 1


def bare_run(model, dm, steps, lr) -> float:
    from mof.training.optim import build_optimizer

    model = copy.deepcopy(model).train()
    opt, sched = build_optimizer(model, steps, lr=lr, warmup_ratio=0.0)
    samples, t0 = 0, None
    for idx, batch in enumerate(batches(dm, steps)):
        if idx == SKIP:
            t0 = time.perf_counter()
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch.get("pixel_values"), labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if idx >= SKIP:
            samples += batch["num_samples"]
    return samples / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    config, dm, _ = tiny_setup(40, num_workers=a.workers)
    torch.manual_seed(0)
    model = MofForConditionalGeneration(config)
    model.requires_grad_(True)
    results = {"lightning": [], "bare": []}
    for _ in range(a.rounds):  # alternate the two loops
        results["lightning"].append(lightning_run(model, dm, a.steps, 2e-3))
        results["bare"].append(bare_run(model, dm, a.steps, 2e-3))
    lit, bare = median(results["lightning"]), median(results["bare"])
    body = table(["loop", "median samples/s", "ratio to bare"],
                 [["bare PyTorch", f"{bare:.1f}", "1.000"], ["mof Lightning", f"{lit:.1f}", f"{lit / bare:.3f}"]])
    record("Framework overhead: Lightning loop vs bare loop",
           f"tiny interleaved model, batch 16, {a.steps} steps ({SKIP} untimed), {a.workers} data worker(s), "
           f"{a.rounds} alternating rounds\n\n{body}", "Target: >= 0.95 of the bare loop's throughput.")


if __name__ == "__main__":
    main()
