"""Lightning strategies by name: `auto`, `ddp`, DeepSpeed ZeRO-2/3 and FSDP2 (all also on CPU processes, gloo)."""

from __future__ import annotations

import contextlib

from lightning.pytorch.strategies import ModelParallelStrategy

from ..errors import ConfigError, unknown

STRATEGIES = ("auto", "ddp", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload", "fsdp2")


def deepspeed_config(stage: int, offload: bool, on_gpu: bool) -> dict:
    """LLaVA's zero2.json / zero3.json / zero3_offload.json, in Lightning's terms."""
    zero = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto"}
    if stage == 3:
        zero.update({"stage3_gather_16bit_weights_on_model_save": True, "sub_group_size": 1e9,
                     "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
                     "stage3_max_live_parameters": 1e9, "stage3_max_reuse_distance": 1e9})
    else:
        zero.update({"allgather_partitions": True, "allgather_bucket_size": 2e8, "reduce_scatter": True})
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    for key in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
        if zero.get(key) == "auto":
            zero[key] = 5e7 if key != "stage3_param_persistence_threshold" else 1e5
    # Micro-batch size, accumulation and clipping are filled in by Lightning from the trainer.
    return {"zero_optimization": zero, "zero_allow_untested_optimizer": True, "wall_clock_breakdown": False}


def build_strategy(name: str, accelerator: str):
    if name not in STRATEGIES:
        raise ConfigError(unknown("strategy.name", "strategy", name, STRATEGIES))
    if name == "auto":
        return "auto"
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(process_group_backend="gloo" if accelerator == "cpu" else "nccl")
    if name == "fsdp2":
        return FSDP2Strategy(accelerator)
    from .deepspeed_strategy import MofDeepSpeedStrategy  # imports deepspeed: only when asked for

    stage = 2 if name == "deepspeed_zero2" else 3
    config = deepspeed_config(stage, name.endswith("offload"), accelerator != "cpu")
    return MofDeepSpeedStrategy(config=config, accelerator_name=accelerator)


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 (PyTorch's `fully_shard`) through Lightning's `ModelParallelStrategy`: data parallel over every rank of
    every node (a 1-D mesh), each rank holding 1/world of every parameter, gradient and optimizer state, as ZeRO-3
    does. The module shards itself in `configure_model` (`shard_with_fsdp2`). Checkpoints are one consolidated file
    written by rank 0, so resume, `resume=auto` and export read them like any other (the restricted reader; no
    `torch.distributed.checkpoint` folder, whose metadata file is a pickle)."""

    def __init__(self, accelerator: str):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1, save_distributed_checkpoint=False,
                         process_group_backend="gloo" if accelerator == "cpu" else None)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes   # Lightning's "auto" is one per node
        super().setup_environment()


def shard_with_fsdp2(model, mesh) -> None:
    """`fully_shard` on every block the models name unsplittable (`_no_split_modules`: the LLM's decoder layers,
    the vision towers), then on the whole model: each block's weights are gathered for its forward and backward
    only. Frozen weights are sharded too and get no gradient."""
    from torch.distributed.fsdp import fully_shard

    blocks = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    for module in reversed(list(model.modules())):   # inner blocks first (a vision tower's layers, then the tower)
        if module is not model and type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def is_fsdp2(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gathered_params(trainer, model):
    """All parameters whole on every rank for the duration (ZeRO-3 partitions them); a no-op otherwise. (FSDP2's
    shards are not gathered in place: its export is rebuilt from a checkpoint, `run.export_after_training`.)"""
    if getattr(trainer.strategy, "zero_stage_3", False):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            yield
    else:
        yield
