"""DeepSpeed through Lightning, on GPUs and on CPU processes (gloo) so sharded training is tested without a GPU.

Lightning's `DeepSpeedStrategy` refuses any accelerator but CUDA, checks that each rank's device
index equals its local rank, and hands DeepSpeed that index, which a CPU device lacks.
`MofDeepSpeedStrategy` lifts the first two on CPU and passes each rank's local index instead;
everything else is Lightning's and DeepSpeed's own code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.strategies import DeepSpeedStrategy


class MofDeepSpeedStrategy(DeepSpeedStrategy):
    def __init__(self, *args, accelerator_name: str = "gpu", **kwargs):
        if accelerator_name == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed picks an accelerator
            kwargs.setdefault("process_group_backend", "gloo")
        # Frozen towers and a frozen LLM never enter DeepSpeed checkpoints.
        kwargs.setdefault("exclude_frozen_parameters", True)
        super().__init__(*args, **kwargs)
        self._on_cpu = accelerator_name == "cpu"

    def setup_environment(self) -> None:
        if self._on_cpu:
            super(DeepSpeedStrategy, self).setup_environment()  # skip the CUDA-only check
        else:
            super().setup_environment()

    def setup_distributed(self) -> None:
        if not self._on_cpu:
            return super().setup_distributed()
        from lightning.fabric.utilities.seed import reset_seed

        # as Lightning's, without the check that each rank's device index equals its local rank
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        import deepspeed

        device_rank = self.root_device.index if self.root_device.index is not None else self.local_rank
        params = filter(lambda p: p.requires_grad, model.parameters())
        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=device_rank), config=self.config, model=model,
            model_parameters=params, optimizer=optimizer, lr_scheduler=lr_scheduler, dist_init_required=False)
        return engine, ds_optimizer


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


@contextlib.contextmanager
def gathered_params(trainer, model):
    """All parameters whole on every rank for the duration (ZeRO-3 partitions them); a no-op otherwise."""
    if getattr(trainer.strategy, "zero_stage_3", False):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            yield
    else:
        yield


def consolidate_zero_checkpoint(checkpoint_dir: str | Path) -> dict:
    """One fp32 checkpoint dict (`state_dict` of the trained weights + Lightning's and mof's states)
    from a DeepSpeed ZeRO checkpoint folder of any stage and any number of ranks."""
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "consolidated.ckpt"
        convert_zero_checkpoint_to_fp32_state_dict(str(checkpoint_dir), str(out))
        return torch.load(out, map_location="cpu", weights_only=False)
