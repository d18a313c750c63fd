"""Training callbacks: throughput, gradient norm, skipped-sample counts."""

from __future__ import annotations

import time
from collections import Counter

import lightning.pytorch as pl
import torch


class ThroughputMonitor(pl.Callback):
    """tokens/s and samples/s over the last logging window, on the progress bar and in the logger."""

    def __init__(self):
        self._t0 = None
        self._tokens = 0
        self._samples = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if "attention_mask" in batch:
            self._tokens += int(batch["attention_mask"].sum()) * trainer.world_size
        self._samples += int(batch.get("num_samples", 0)) * trainer.world_size
        if (batch_idx + 1) % trainer.log_every_n_steps == 0:
            dt = time.perf_counter() - self._t0
            module.log_dict({"perf/tokens_per_s": self._tokens / dt, "perf/samples_per_s": self._samples / dt},
                            prog_bar=True, rank_zero_only=True)
            self._t0, self._tokens, self._samples = time.perf_counter(), 0, 0


class GradNormMonitor(pl.Callback):
    def on_before_optimizer_step(self, trainer, module, optimizer):
        if trainer.global_step % trainer.log_every_n_steps:
            return
        grads = [p.grad.detach().norm(2) for p in module.parameters() if p.grad is not None]
        if grads:
            module.log("train/grad_norm", torch.stack(grads).norm(2), rank_zero_only=True)


class SkippedSamples(pl.Callback):
    """Counts the samples the data pipeline skipped, by reason (a bad sample never stops training)."""

    def __init__(self):
        self.counts = Counter()
        self.truncated = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.counts.update(batch.get("skipped", {}))
        self.truncated += int(batch.get("truncated", 0))
        if (batch_idx + 1) % trainer.log_every_n_steps == 0:
            metrics = {f"data/skipped/{k}": float(v) for k, v in self.counts.items()}
            metrics["data/skipped_total"] = float(sum(self.counts.values()))
            metrics["data/truncated"] = float(self.truncated)
            module.log_dict(metrics, rank_zero_only=True)

    def state_dict(self):
        return {"counts": dict(self.counts), "truncated": self.truncated}

    def load_state_dict(self, state):
        self.counts = Counter(state.get("counts", {}))
        self.truncated = state.get("truncated", 0)


class StopAtStep(pl.Callback):
    """Stop after `step` optimizer steps as if interrupted (the schedule still spans the whole run):
    for training in chunks on time-limited jobs, then `resume=auto`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True
