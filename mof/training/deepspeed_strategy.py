"""The DeepSpeed strategy: Lightning's, on GPUs and on CPU processes (gloo) so sharded training is tested without a GPU.

Lightning's `DeepSpeedStrategy` refuses any accelerator but CUDA, checks that each rank's device
index equals its local rank, and hands DeepSpeed that index, which a CPU device lacks.
`MofDeepSpeedStrategy` lifts the first two on CPU and passes each rank's local index instead;
everything else is Lightning's and DeepSpeed's own code.
"""

from __future__ import annotations

import argparse
import os

from lightning.pytorch.strategies import DeepSpeedStrategy

from ..checkpoints.files import restricted_loads


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


    def load_checkpoint(self, checkpoint_path, *args, **kwargs):
        """DeepSpeed reads its shards with `torch.load(weights_only=False)`: a pickle in a folder from elsewhere would
        run on resume. Every load it makes goes through mof's restricted reader instead (a one-line CheckpointError)."""
        with restricted_loads():
            return super().load_checkpoint(checkpoint_path, *args, **kwargs)
