"""Training callbacks: throughput, gradient norm, skipped-sample counts, ZeRO partition report, stop at a step."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import torch

from ..errors import MofError


def throughput_monitor() -> pl.Callback:
    """Lightning's `ThroughputMonitor` counting samples and *real* tokens (padding excluded), averaged over the last
    10 batches: `train/device/samples_per_sec`, `train/device/items_per_sec` (tokens), the same without `device/` for
    all devices together, and `train/device/mfu` where Lightning knows the device's peak FLOP/s and the module states
    its FLOPs (`MofLitModule.flops_per_batch`). A batch whose every sample was skipped is not counted as one
    (Lightning's monitor wants at least a sample a batch); its time goes to the next."""
    from lightning.pytorch.callbacks import ThroughputMonitor

    class RealTokens(ThroughputMonitor):
        def on_train_batch_end(self, trainer, module, outputs, batch, *args):
            if int(batch.get("num_samples", 0)):
                super().on_train_batch_end(trainer, module, outputs, batch, *args)

    return RealTokens(batch_size_fn=lambda batch: int(batch.get("num_samples", 0)),
                      length_fn=lambda batch: int(batch.get("num_tokens", 0)), window_size=10)


class PaddingFraction(pl.Callback):
    """What Lightning's monitor does not count: the share of positions that are padding, over each logging window."""

    def __init__(self):
        self._tokens = self._positions = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._tokens += int(batch.get("num_tokens", 0))
        self._positions += batch["input_ids"].numel() if "input_ids" in batch else 0
        if (batch_idx + 1) % trainer.log_every_n_steps == 0:
            module.log("perf/padding_fraction", 1 - self._tokens / max(self._positions, 1), rank_zero_only=True)
            self._tokens = self._positions = 0


class GradNormMonitor(pl.Callback):
    """The total gradient 2-norm, by Lightning's `grad_norm`, every logging step; under FSDP2, where each rank holds a
    shard of each gradient (a DTensor, which Lightning's `grad_norm` cannot stack), by torch's `get_total_norm` over
    the shards, reduced over the ranks."""

    def on_before_optimizer_step(self, trainer, module, optimizer):
        from lightning.pytorch.utilities import grad_norm

        if trainer.global_step % trainer.log_every_n_steps:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if grads and hasattr(grads[0], "full_tensor"):
            module.log("train/grad_norm", torch.nn.utils.get_total_norm(grads, 2.0).full_tensor(), rank_zero_only=True)
            return
        norms = grad_norm(module, norm_type=2)
        if norms:
            module.log("train/grad_norm", norms["grad_2.0_norm_total"], rank_zero_only=True)


class SkippedSamples(pl.Callback):
    """Counts the samples the data pipeline skipped, by reason (a bad sample never stops training), and those
    trained on. `read_skipped`: the records skipped while reading the files (counted once, out of `read_total`).

    `fraction` judges each kind of skip on its own denominator: records refused while reading against all records
    read (a property of the files, whatever the run's length), and samples refused when drawn against the samples
    drawn, so a run shorter than an epoch is judged on its own samples."""

    def __init__(self, read_skipped: dict | None = None, read_total: int = 0):
        self.counts = Counter(read_skipped or {})
        self.read_skipped = sum(self.counts.values())
        self.read_total = max(read_total, self.read_skipped)
        self.trained = 0
        self.truncated = 0

    @property
    def fraction(self) -> float:
        drawn_skipped = sum(self.counts.values()) - self.read_skipped
        return max(self.read_skipped / max(1, self.read_total), drawn_skipped / max(1, drawn_skipped + self.trained))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.counts.update(batch.get("skipped", {}))
        self.trained += int(batch.get("num_samples", 0))
        self.truncated += int(batch.get("truncated", 0))
        if (batch_idx + 1) % trainer.log_every_n_steps == 0:
            metrics = {f"data/skipped/{k}": float(v) for k, v in self.counts.items()}
            metrics["data/skipped_total"] = float(sum(self.counts.values()))
            metrics["data/truncated"] = float(self.truncated)
            module.log_dict(metrics, rank_zero_only=True)

    def state_dict(self):
        return {"counts": dict(self.counts), "trained": self.trained, "truncated": self.truncated}

    def load_state_dict(self, state):
        self.counts = Counter(state.get("counts", {}))
        self.trained = state.get("trained", 0)
        self.truncated = state.get("truncated", 0)


class GracefulStop(MofError):
    """Training stopped at a step boundary after writing a resumable checkpoint (`stop_at_step`, SIGTERM)."""

    def __init__(self, reason: str, checkpoint: str, step: int):
        super().__init__(f"{reason}: stopped at global step {step}; checkpoint {checkpoint} (continue with resume=auto)")
        self.reason, self.checkpoint, self.step = reason, checkpoint, step


class StepProgressBar(pl.callbacks.TQDMProgressBar):
    """One bar for the whole run, where Lightning's starts again each epoch: optimizer steps done of all of them,
    elapsed and remaining time, the epoch (counted from 1) and the loss, in 80 columns."""

    BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}]{postfix}"
    COLUMNS = 80

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.bar_format, bar.dynamic_ncols, bar.ncols = self.BAR_FORMAT, False, self.COLUMNS
        return bar

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=int(trainer.estimated_stepping_batches))
        bar.n = bar.initial = trainer.global_step  # a resumed run starts where it stopped

    def on_train_epoch_start(self, trainer, *_):
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self.train_progress_bar.set_description(f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs else ""))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bar = self.train_progress_bar
        if self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            loss = trainer.progress_bar_metrics.get("train/loss")
            bar.set_postfix_str(f"loss {loss:.3f}" if loss is not None else "", refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer, pl_module):
        pass  # the bar goes on into the next epoch


class LastCheckpoint(pl.callbacks.ModelCheckpoint):
    """`last.ckpt` every `checkpoint.every_n_train_steps` steps and at the end of training, so that a longer run
    continues from the final state (Lightning saves it at the end only when it never did during the run). Replaced
    in place: no version counter, no `last-v1.ckpt` that `resume=auto` would miss."""

    def __init__(self, dirpath, every_n_train_steps: int):
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, enable_version_counter=False,
                         every_n_train_steps=every_n_train_steps)

    def on_train_end(self, trainer, pl_module):
        if not self._should_skip_saving_checkpoint(trainer):  # skips a state already saved, and fast_dev_run
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def holds(self, global_step: int) -> bool:
        """Whether `last.ckpt` was written by this callback at `global_step` (Lightning's own record of its last
        save; with `save_top_k=0` it writes no other file)."""
        return self._last_global_step_saved == global_step and bool(self.last_model_path) and \
            self._last_checkpoint_saved == self.last_model_path


class KeptCheckpoints(pl.callbacks.ModelCheckpoint):
    """`step<N>.ckpt` every `checkpoint.keep_every_n_train_steps` steps, every one kept. Its own class because
    Lightning tells the states of checkpoint callbacks apart by class and trigger, and `last.ckpt`'s may share the
    trigger."""

    def __init__(self, dirpath, every_n_train_steps: int):
        super().__init__(dirpath=dirpath, filename="step{step:06d}", auto_insert_metric_name=False, save_top_k=-1,
                         enable_version_counter=False, every_n_train_steps=every_n_train_steps)


class SamplerEpoch(pl.Callback):
    """Tells the data's batch sampler which epoch starts, so that each epoch draws its own order (seeded by seed +
    epoch) and a run resumed in a later epoch draws the order the uninterrupted run drew. Lightning calls `set_epoch`
    on a loader's `sampler` and on its `batch_sampler.sampler` (`lightning.fabric.utilities.data._set_sampler_epoch`),
    never on a batch sampler itself: until the 14th stop every epoch repeated epoch 0's order, and a run resumed after
    epoch 0 went on in another order than the run it continued."""

    def on_train_epoch_start(self, trainer, module):
        sampler = getattr(trainer.datamodule, "sampler", None)
        if sampler is not None:
            sampler.set_epoch(trainer.current_epoch)


class StopAndSave(pl.Callback):
    """At a step boundary, on SIGTERM (SLURM preemption, a scheduler's kill) or after `stop_at_step` steps, write
    `last.ckpt` from the mid-epoch state (loops, sampler position, RNG) and stop: `resume=auto` then continues
    exactly where this stopped, whatever the periodic checkpoint interval."""

    def __init__(self, checkpoint: Path, stop_at_step: int | None = None):
        self.checkpoint = Path(checkpoint)
        self.stop_at_step = stop_at_step
        self.stopped: GracefulStop | None = None   # a stop saved from `on_exception`

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        reason = ("SIGTERM" if trainer.received_sigterm
                  else "stop_at_step" if self.stop_at_step and trainer.global_step >= self.stop_at_step else None)
        if reason is None or trainer.global_step >= trainer.max_steps > 0:
            return
        raise self._save(trainer, reason)

    def on_exception(self, trainer, module, exception):
        """A SIGTERM that lands after this step's `on_train_batch_end` looked, and before Lightning's own look at the
        end of the step, ends the run with Lightning's `SIGTERMException`, a `SystemExit` without a code: exit status
        0 and no checkpoint of the step (seen in CI). The step is done by then: save it, as above; `train` turns the
        exception into the `GracefulStop` it would have been."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and trainer.training and trainer.global_step > 0:
            self.stopped = self._save(trainer, "SIGTERM")

    def _save(self, trainer, reason: str) -> GracefulStop:
        if trainer.checkpoint_callback is not None:
            trainer.checkpoint_callback.last_model_path = str(self.checkpoint)
        trainer.save_checkpoint(self.checkpoint)
        return GracefulStop(reason, str(self.checkpoint), trainer.global_step)


class PartitionReport(pl.Callback):
    """Writes `partition_rank<R>.json` per rank under the sharding strategies: parameters held locally against the
    model's total (ZeRO-3 and FSDP2 shard every parameter; ZeRO-2 keeps whole parameters and partitions optimizer
    states)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_train_start(self, trainer, module):
        total = local = trainable_total = trainable_local = 0
        for p in module.parameters():
            full = p.ds_numel if hasattr(p, "ds_numel") else p.numel()   # a DTensor's numel is the whole tensor's
            held = (p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.to_local().numel() if hasattr(p, "to_local")
                    else p.numel())
            total, local = total + full, local + held
            if p.requires_grad:
                trainable_total, trainable_local = trainable_total + full, trainable_local + held
        config = getattr(trainer.strategy, "config", None) or {}
        report = {"rank": trainer.global_rank, "world_size": trainer.world_size,
                  "zero_stage": config.get("zero_optimization", {}).get("stage"),
                  "parameters_total": total, "parameters_local": local,
                  "trainable_total": trainable_total, "trainable_local": trainable_local}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / f"partition_rank{trainer.global_rank}.json").write_text(json.dumps(report, indent=1))
