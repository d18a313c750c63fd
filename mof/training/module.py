"""`MofLitModule`: the LightningModule that trains a (possibly peft-wrapped) MoF model."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch

from ..errors import MofError
from ..checkpoints.files import set_aside_unverified_last
from ..checkpoints.resume import restore_rng_states, rng_states, trainable_state
from ..model.flops import sample_lengths, training_flops
from .optim import build_optimizer


log = logging.getLogger(__name__)


class NonFiniteLossError(MofError, FloatingPointError):
    pass


class MofLitModule(pl.LightningModule):
    """Args:
        model: a `MofForConditionalGeneration`, frozen/wrapped for its stage (see `stages.apply_stage`).
        optimizer: `lr`, `weight_decay`, `betas`, and optional `projector_lr`, `vision_lr`, `llm_lr`.
        scheduler: `warmup_ratio` of the cosine schedule.
        run_info: stored in every checkpoint (model config, seed, ...) so `mof.export` can rebuild the model.
    """

    def __init__(self, model, optimizer: dict, scheduler: dict | None = None, run_info: dict | None = None):
        super().__init__()
        self.model = model
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler or {})
        self.run_info = dict(run_info or {})
        self.strict_loading = False  # resume checkpoints hold the trainable weights only
        # Batches that updated the model; a global batch whose every sample was skipped updates nothing.
        self.trained_batches = 0
        self._samples_since_step = 0
        self.last_saved_step = None
        self.flops_per_batch = None   # the last batch's model FLOPs (`mof.model.flops`), read by ThroughputMonitor
        self._sharded = False   # FSDP2: set in configure_model

    def forward(self, **batch):
        return self.model(**batch)

    def training_step(self, batch, batch_idx):
        n = batch.get("num_samples", 0)
        n_global = int(self._sum_over_ranks(torch.tensor(float(n), device=self.device)))
        self._samples_since_step += n_global
        if n_global == 0:  # every sample on every rank was skipped (and counted): see optimizer_step
            return self._zero_loss()
        self.trained_batches += 1
        borrowed = self._batch_for_empty_ranks(batch, n) if self._sharded else None
        if n:
            loss = self._loss(batch)
        elif borrowed is not None:   # FSDP2: another rank's batch, contributing nothing
            loss = self._loss(borrowed) * 0.0
        else:  # this rank's samples were all skipped, others have some: join their gradient exchange
            loss = self._zero_loss()
        # The global batch's loss, each rank's weighted by its samples; every rank takes the same decision.
        mean = self._sum_over_ranks(loss.detach() * n) / n_global
        if not torch.isfinite(mean):
            raise NonFiniteLossError(
                f"non-finite loss ({mean.item()}) at global step {self.global_step}, batch {batch_idx}: training stopped, "
                f"nothing of this step was saved. Last checkpoint of a state with finite loss and weights: "
                f"{self.last_good_checkpoint()}. Resume from it (resume=auto) with a lower stage.optimizer.lr (the "
                "current config's learning rates apply on resume), or check the data.")
        self.log("train/loss", mean, prog_bar=True, batch_size=n_global)
        if n:   # this rank's model FLOPs, for Lightning's ThroughputMonitor (MFU where it knows the device's peak)
            pixels = batch.get("pixel_values")
            images = int(pixels[0].shape[0]) if isinstance(pixels, (list, tuple)) else int(pixels.shape[0]) if pixels is not None else 0
            self.flops_per_batch = training_flops(
                self.model, sample_lengths(batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids")), images)
        return loss

    def _loss(self, batch) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                          position_ids=batch.get("position_ids"), pixel_values=batch.get("pixel_values"),
                          labels=batch["labels"]).loss

    def _batch_for_empty_ranks(self, batch, n: int):
        """FSDP2 gathers each block's weights inside its forward, so every rank must run one. When some ranks have
        no sample this step (all skipped) and others do, the first rank with samples sends its batch to every rank
        (a collective: all ranks call this), and the empty ranks run it with their loss times zero."""
        if self.trainer.world_size == 1:
            return None
        counts = self.all_gather(torch.tensor(n, device=self.device)).reshape(-1)
        if bool((counts > 0).all()):
            return None
        source = int((counts > 0).nonzero()[0])
        return self.trainer.strategy.broadcast(batch if self.global_rank == source else None, src=source)

    def configure_model(self):
        """Under `strategy=fsdp2`: the model sharded over the data-parallel ranks (`shard_with_fsdp2`), once.
        Under the other strategies the model is whole here, and they partition it themselves."""
        from .strategies import FSDP2Strategy, is_fsdp2, shard_with_fsdp2

        if isinstance(self.trainer.strategy, FSDP2Strategy) and not is_fsdp2(self.model):
            shard_with_fsdp2(self.model, self.device_mesh["data_parallel"])
        self._sharded = is_fsdp2(self.model)

    def _skips_empty_steps(self) -> bool:
        # DeepSpeed's engine expects a step after each backward: there an empty batch takes a zero-gradient step.
        return "zero_optimization" not in (getattr(self.trainer.strategy, "config", None) or {})

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        """No update when every sample since the last step was skipped on every rank: weights and optimizer state
        stay as they were (all ranks decide alike from the global sample count). Lightning still counts the step,
        and the schedule follows Lightning's count."""
        if not self._skips_empty_steps():
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        loss = optimizer_closure()  # training_step and backward, on every rank
        empty, self._samples_since_step = self._samples_since_step == 0, 0
        if not empty:
            optimizer.step(closure=lambda: loss)

    def _sum_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size == 1:
            return value
        return self.trainer.strategy.reduce(value, reduce_op="sum")

    def _zero_loss(self) -> torch.Tensor:
        """A zero that depends on every trainable weight: its gradients are zeros, so this rank adds nothing."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return sum((p.sum() for p in params), torch.zeros((), device=self.device)) * 0.0

    def configure_optimizers(self):
        cfg = dict(self.optimizer_cfg)
        zero = (getattr(self.trainer.strategy, "config", None) or {}).get("zero_optimization", {})
        optimizer, scheduler = build_optimizer(
            self.model, self.trainer.estimated_stepping_batches, lr=cfg.pop("lr"), **cfg,
            warmup_ratio=self.scheduler_cfg.get("warmup_ratio", 0.03), cpu_adam="offload_optimizer" in zero)
        self.configured_lrs = list(scheduler.base_lrs)  # before a resume restores the stored ones
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def last_good_checkpoint(self) -> str:
        """The newest checkpoint whose state gave a finite loss. The state just saved is not known good until a
        step computed a loss from it: when that loss is non-finite, its checkpoint is set aside."""
        callback = self.trainer.checkpoint_callback
        folder = Path(callback.dirpath) if callback is not None and callback.dirpath else None
        if folder is None:
            return "none"
        good = folder / "last.ckpt"
        if self.last_saved_step == self.global_step and self.trainer.is_global_zero and good.is_file():
            good = set_aside_unverified_last(folder, self.global_step)
        return str(good) if good is not None and good.exists() else "none yet"

    def _weights_finite(self) -> bool:
        local = (p.to_local() if hasattr(p, "to_local") else getattr(p, "ds_tensor", p)   # this rank's shard
                 for p in self.model.parameters() if p.requires_grad)
        finite = all(torch.isfinite(t).all() for t in local)
        flag = self._sum_over_ranks(torch.tensor(0.0 if finite else 1.0, device=self.device))
        return float(flag) == 0.0

    def on_train_start(self):
        """On resume, the learning rates of the current config apply, not those stored with the optimizer."""
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            wanted = self.configured_lrs
            if list(scheduler.base_lrs) == wanted:
                continue
            log.warning("resume: learning rates %s from the checkpoint replaced by the current config's %s",
                        scheduler.base_lrs, wanted)
            scheduler.base_lrs = list(wanted)
            factors = [fn(scheduler.last_epoch) for fn in scheduler.lr_lambdas]
            for group, lr, factor in zip(scheduler.optimizer.param_groups, wanted, factors):
                group["initial_lr"], group["lr"] = lr, lr * factor

    def on_save_checkpoint(self, checkpoint):
        if not self._weights_finite():
            raise NonFiniteLossError(
                f"the trainable weights became non-finite at global step {self.global_step}: no checkpoint is written "
                f"from this state. Last checkpoint of a state with finite loss and weights: {self.last_good_checkpoint()}. Resume from it "
                "with a lower stage.optimizer.lr.")
        if "state_dict" in checkpoint:  # DeepSpeed keeps its own shards and leaves none here
            checkpoint["state_dict"] = trainable_state(self, checkpoint["state_dict"])
        checkpoint["rng_states"] = rng_states()
        checkpoint["trained_batches"] = self.trained_batches
        self.last_saved_step = checkpoint.get("global_step", self.global_step)
        checkpoint["mof"] = self.run_info

    def on_load_checkpoint(self, checkpoint):
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])
        self.trained_batches = int(checkpoint.get("trained_batches", checkpoint.get("global_step", 0)))
