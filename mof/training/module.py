"""`MofLitModule`: the LightningModule that trains a (possibly peft-wrapped) MoF model."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import torch

from ..errors import MofError
from .checkpointing import restore_rng_states, rng_states, trainable_state
from .optim import build_optimizer


log = logging.getLogger(__name__)


class NonFiniteLossError(MofError, FloatingPointError):
    pass


class MofLitModule(pl.LightningModule):
    """Args:
        model: a `MofForConditionalGeneration`, frozen/wrapped for its stage (see `stages.apply_stage`).
        optimizer: `lr`, `weight_decay`, `betas`, and optional `adapter_lr`, `vision_lr`, `llm_lr`.
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

    def forward(self, **batch):
        return self.model(**batch)

    def training_step(self, batch, batch_idx):
        n = batch.get("num_samples", 0)
        n_global = int(self._sum_over_ranks(torch.tensor(float(n), device=self.device)))
        if n_global == 0:
            return None  # every sample on every rank was skipped (and counted): no update, on all ranks alike
        if n:
            loss = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              pixel_values=batch.get("pixel_values"), labels=batch["labels"]).loss
        else:  # this rank's samples were all skipped, others have some: join their gradient exchange
            loss = self._zero_loss()
        # The global batch's loss, each rank's weighted by its samples; every rank takes the same decision.
        mean = self._sum_over_ranks(loss.detach() * n) / n_global
        if not torch.isfinite(mean):
            raise NonFiniteLossError(
                f"non-finite loss ({mean.item()}) at global step {self.global_step}, batch {batch_idx}: training stopped, "
                f"nothing of this step was saved. Last checkpoint with finite weights: {self.last_finite_checkpoint()}. "
                "Resume from it with a lower stage.optimizer.lr (the current config's learning rates apply on resume), "
                "or check the data.")
        self.log("train/loss", mean, prog_bar=True, batch_size=n_global)
        return loss

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

    def last_finite_checkpoint(self) -> str:
        callback = self.trainer.checkpoint_callback
        return (getattr(callback, "last_model_path", "") or "none yet") if callback else "none"

    def _weights_finite(self) -> bool:
        finite = all(torch.isfinite(getattr(p, "ds_tensor", p)).all() for p in self.model.parameters() if p.requires_grad)
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
                f"from this state. Last checkpoint with finite weights: {self.last_finite_checkpoint()}. Resume from it "
                "with a lower stage.optimizer.lr.")
        if "state_dict" in checkpoint:  # DeepSpeed keeps its own shards and leaves none here
            checkpoint["state_dict"] = trainable_state(self, checkpoint["state_dict"])
        checkpoint["rng_states"] = rng_states()
        checkpoint["mof"] = self.run_info

    def on_load_checkpoint(self, checkpoint):
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])
