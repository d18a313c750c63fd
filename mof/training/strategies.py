"""Lightning strategies by name: `auto`, `ddp`, and DeepSpeed ZeRO-2/3 (also on CPU processes, gloo)."""

from __future__ import annotations


from ..errors import ConfigError, unknown

STRATEGIES = ("auto", "ddp", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload")


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
    from .deepspeed_strategy import MofDeepSpeedStrategy  # imports deepspeed: only when asked for

    stage = 2 if name == "deepspeed_zero2" else 3
    config = deepspeed_config(stage, name.endswith("offload"), accelerator != "cpu")
    return MofDeepSpeedStrategy(config=config, accelerator_name=accelerator)
