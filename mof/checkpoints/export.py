"""Export a model as a `save_pretrained` folder that `from_pretrained` and `evaluate.py` load.

    python -m mof.checkpoints.export CHECKPOINT [--out DIR] [--overwrite]

CHECKPOINT is a Lightning `.ckpt` (a file, or a DeepSpeed checkpoint folder) or a run directory (its
`checkpoints/last.ckpt`). Written: `model.safetensors` + `config.json`, the tokenizer,
`preprocessor_config.json`, `mof_export.json`; LoRA runs also the peft adapter in `lora_adapter/`, the model
itself merged. By default the folder goes beside the checkpoint's run as `export-step<N>` (the end of
training writes `export/`); an existing non-empty folder is never replaced without `--overwrite`.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from ..atomic import replaced_folder
from ..data.images import MofImageProcessor
from ..console import setup_console
from ..errors import MofError, exit_with
from ..data.tokenizer import load_tokenizer
from ..model.stages import unwrap
from .rebuild import rebuild_from_checkpoint


class ExportExistsError(MofError, FileExistsError):
    pass


def save_export(model, tokenizer, image_processor, out: Path, info: dict | None = None, overwrite: bool = False) -> Path:
    """Written to a private folder, then renamed into place: a crash never leaves half an export."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportExistsError(f"{out}: already holds files; choose another output folder or pass overwrite")
    with replaced_folder(out) as tmp:
        if hasattr(model, "peft_config"):
            model.save_pretrained(tmp / "lora_adapter")
            merged = copy.deepcopy(model).merge_and_unload()
        else:
            merged = model
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        (tmp / "mof_export.json").write_text(json.dumps(info or {}, indent=1, default=str))
    return out


def default_export_dir(checkpoint_path: Path, step) -> Path:
    """`RUN/checkpoints/X.ckpt` -> `RUN/export-step<N>`; a checkpoint elsewhere -> `export-step<N>` beside it."""
    parent = checkpoint_path.parent
    run_dir = parent.parent if parent.name == "checkpoints" else parent
    return run_dir / f"export-step{int(step) if step is not None else 0}"


def export_checkpoint(checkpoint: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    model, info, path, ckpt = rebuild_from_checkpoint(checkpoint)
    tokenizer = load_tokenizer(str(info.get("tokenizer", "tiny")))
    processor = MofImageProcessor.for_model(info.get("image_processor"), unwrap(model).config,
                                            f"{path}: image_processor")
    step = ckpt.get("global_step")
    out = Path(out) if out else default_export_dir(path, step)
    return save_export(model, tokenizer, processor, out, {"global_step": step, "stage": info["stage"].get("name"),
                                                          "template": info["stage"].get("template"),
                                                          "from_checkpoint": str(path)}, overwrite)


PROG = "python -m mof.checkpoints.export"  # the usage line says the command a user types, not the file name


def main(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--out", default=None, help="default: <run dir>/export-step<N>")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    a = p.parse_args(argv)
    setup_console()
    try:
        out = export_checkpoint(a.checkpoint, a.out, a.overwrite)
    except MofError as e:
        exit_with(e)
    print(f"exported to {out}")


if __name__ == "__main__":
    main()
