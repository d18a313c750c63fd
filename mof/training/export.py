"""Export a trained model as a `save_pretrained` folder that `from_pretrained` and `evaluate.py` load.

Written: `model.safetensors` + `config.json`, the tokenizer, `preprocessor_config.json`; LoRA runs also
write the peft adapter (LoRA and adapters) to `lora_adapter/`, and the model itself is the merged one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from .stages import unwrap


def save_export(model, tokenizer, image_processor, out: Path, info: dict | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(out / "lora_adapter")
        merged = copy.deepcopy(model).merge_and_unload()
    else:
        merged = model
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    (out / "mof_export.json").write_text(json.dumps(info or {}, indent=1, default=str))
    return out


def export_model(trainer, module, tokenizer, image_processor, out: Path) -> Path:
    """End-of-training export from the live model (gathered from all ranks under ZeRO-3)."""
    from .deepspeed_cpu import gathered_params

    model = module.model
    with gathered_params(trainer, model):
        if trainer.is_global_zero:
            stage = module.run_info.get("cfg", {}).get("stage", {})
            save_export(model, tokenizer, image_processor, out, {"global_step": trainer.global_step,
                                                                 "stage": stage.get("name"), "template": stage.get("template")})
    trainer.strategy.barrier("mof-export")
    return out


__all__ = ["save_export", "export_model", "unwrap"]
