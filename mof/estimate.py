"""Plan a run before renting GPUs: parameter counts and model-state memory per GPU.

    python -m mof.estimate model=llava15_7b mof=interleaved stage=finetune strategy=deepspeed_zero3 trainer.devices=8

The model is built on the meta device (no memory, no download). Model states per GPU follow the
ZeRO paper's accounting for mixed-precision AdamW: 2 bytes per parameter for 16-bit weights, 2 per
trainable parameter for gradients, 12 per trainable parameter for the fp32 master copy and both
moments; ZeRO-2 partitions gradients and optimizer states over the GPUs, ZeRO-3 weights too, and
offload moves optimizer states (and with ZeRO-3 the weights) to CPU memory. Activations are not
included: they depend on batch size, sequence length and gradient checkpointing.
"""

from __future__ import annotations


import hydra
import torch
from omegaconf import DictConfig

from .console import setup_console
from .errors import ConfigError, MofError, exit_with
from .model import MofForConditionalGeneration
from .model.stages import apply_stage, parameter_report
from .training.from_config import model_config_from, stage_plan

GiB = 1024**3


def count(cfg) -> list[tuple[str, int, int]]:
    """`(part, parameters, trainable)`: the model built on the meta device and put in its stage by the same
    `apply_stage` as training, counted by the same report as training's `parameters.txt`."""
    with torch.device("meta"):
        model = MofForConditionalGeneration(model_config_from(cfg))
    return parameter_report(apply_stage(model, stage_plan(cfg)))


def model_state_bytes(total: int, trainable: int, strategy: str, devices: int) -> dict[str, float]:
    weights, grads, optim = 2.0 * total, 2.0 * trainable, 12.0 * trainable
    n = max(1, devices)
    if strategy in ("auto", "ddp"):
        gpu, cpu = weights + grads + optim, 0.0
    elif strategy == "deepspeed_zero2":
        gpu, cpu = weights + (grads + optim) / n, 0.0
    elif strategy in ("deepspeed_zero3", "fsdp2"):   # every state sharded
        gpu, cpu = (weights + grads + optim) / n, 0.0
    elif strategy == "deepspeed_zero3_offload":
        gpu, cpu = grads / n, weights + optim  # offloaded states live in each node's CPU memory
    else:
        raise ConfigError(f"strategy.name: unknown strategy {strategy!r}")
    return {"gpu": gpu, "cpu": cpu}


def report(cfg) -> str:
    rows = count(cfg)
    total, trainable = sum(r[1] for r in rows), sum(r[2] for r in rows)
    devices = int(cfg.trainer.devices) * int(cfg.trainer.num_nodes)
    lines = [f"{'part':<22}{'parameters':>16}{'trainable':>16}"]
    lines += [f"{name:<22}{n:>16,}{t:>16,}" for name, n, t in rows]
    lines.append(f"{'total':<22}{total:>16,}{trainable:>16,}")
    lines.append("")
    lines.append(f"model states per GPU (stage={cfg.stage.name}, {devices} GPUs, 16-bit weights, AdamW):")
    for strategy in ("ddp", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload", "fsdp2"):
        mem = model_state_bytes(total, trainable, strategy, devices)
        mark = "  <- strategy" if strategy == cfg.strategy.name or (cfg.strategy.name == "auto" and strategy == "ddp") else ""
        cpu = f", CPU {mem['cpu'] / GiB:7.1f} GiB per node" if mem["cpu"] else ""
        lines.append(f"  {strategy:<26} GPU {mem['gpu'] / GiB:7.1f} GiB{cpu}{mark}")
    lines.append("(activations come on top: they grow with batch size and sequence length; gradient checkpointing cuts them)")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="pkg://mof.conf", config_name="train")
def main(cfg: DictConfig):
    setup_console()
    try:
        print(report(cfg))
    except MofError as e:
        exit_with(e)


if __name__ == "__main__":
    main()
