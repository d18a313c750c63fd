"""Evaluation results to wandb (offline unless WANDB_MODE says otherwise): metrics and a predictions table."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .report import metric_names


def log_results(results: dict, out_dir: Path, name: str, max_rows: int = 300) -> None:
    import wandb

    mode = os.environ.get("WANDB_MODE", "offline")
    run = wandb.init(project="mof", name=name, dir=str(out_dir), mode=mode, job_type="evaluation",
                     config={k: results.get(k) for k in ("benchmark", "checkpoint", "template", "prompt")})
    metrics = {f"{results['benchmark']}/{k}": results[k] for k in metric_names(results) if k in results}
    metrics.update({f"{results['benchmark']}/{split}/{k}": v[k] for split, v in (results.get("per_split") or {}).items()
                    for k in metric_names(results) if k in v})
    metrics.update({f"{results['benchmark']}/pattern/{p}": v["pair_accuracy"]
                    for p, v in (results.get("per_pattern") or {}).items()})
    run.log(metrics)
    pred_file = out_dir / "predictions.jsonl"
    if pred_file.exists() and results["benchmark"] in ("mmvp", "synthetic"):
        root = Path(results.get("root") or "")
        columns = ["index", "image", "question", "options", "answer", "response", "parsed", "correct"]
        table = wandb.Table(columns=columns)
        for line in pred_file.read_text().splitlines()[:max_rows]:
            p = json.loads(line)
            img = root / "MMVP Images" / f"{p['index']}.jpg"
            table.add_data(p["index"], wandb.Image(str(img)) if img.exists() else None, p["question"], p["options"],
                           p["answer"], p["response"], p["parsed"], p["correct"])
        run.log({"predictions": table})
    run.finish()
