"""Training callbacks: throughput, gradient norm, skipped-sample counts, ZeRO partition report, stop at a step."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

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


class ZeroPartitionReport(pl.Callback):
    """Writes `zero_rank<R>.json` per rank: parameters held locally against the model's total (ZeRO-3
    partitions every parameter; ZeRO-2 keeps whole parameters and partitions optimizer states)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_train_start(self, trainer, module):
        total = local = trainable_total = trainable_local = 0
        for p in module.parameters():
            full = p.ds_numel if hasattr(p, "ds_numel") else p.numel()
            held = p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()
            total, local = total + full, local + held
            if p.requires_grad:
                trainable_total, trainable_local = trainable_total + full, trainable_local + held
        report = {"rank": trainer.global_rank, "world_size": trainer.world_size,
                  "zero_stage": trainer.strategy.config["zero_optimization"]["stage"],
                  "parameters_total": total, "parameters_local": local,
                  "trainable_total": trainable_total, "trainable_local": trainable_local}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / f"zero_rank{trainer.global_rank}.json").write_text(json.dumps(report, indent=1))
