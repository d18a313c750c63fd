"""`MofLitModule`: the LightningModule that trains a (possibly peft-wrapped) MoF model."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from .checkpointing import restore_rng_states, rng_states, trainable_state
from .optim import build_optimizer


class NonFiniteLossError(FloatingPointError):
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
        if batch.get("num_samples", 0) == 0:
            return None  # every sample of the batch was skipped (and counted)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         pixel_values=batch.get("pixel_values"), labels=batch["labels"])
        loss = out.loss
        if not torch.isfinite(loss):
            last = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or "none yet"
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at global step {self.global_step}, batch {batch_idx}: training stopped. "
                f"The last good checkpoint is kept: {last}. Lower the learning rate or check the data.")
        # Averaged over ranks, so that it is the global batch's loss under data parallelism.
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["num_samples"], sync_dist=self.trainer.world_size > 1)
        return loss

    def configure_optimizers(self):
        cfg = dict(self.optimizer_cfg)
        zero = (getattr(self.trainer.strategy, "config", None) or {}).get("zero_optimization", {})
        optimizer, scheduler = build_optimizer(
            self.model, self.trainer.estimated_stepping_batches, lr=cfg.pop("lr"), **cfg,
            warmup_ratio=self.scheduler_cfg.get("warmup_ratio", 0.03), cpu_adam="offload_optimizer" in zero)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        if "state_dict" in checkpoint:  # DeepSpeed keeps its own shards and leaves none here
            checkpoint["state_dict"] = trainable_state(self, checkpoint["state_dict"])
        checkpoint["rng_states"] = rng_states()
        checkpoint["mof"] = self.run_info

    def on_load_checkpoint(self, checkpoint):
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])
