"""Scan a dataset with the exact code path of training and report what it would train on.

    python -m mof.training.data_report data=llava_instruct paths.data_dir=/data [stage=...] [model=...]

Writes `report.json` (total, valid, skipped by reason, fully_masked, truncated, token-length
percentiles) to the run directory and prints one sample with its supervised tokens marked [[...]].
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from ..console import setup_console
from ..data import IGNORE_INDEX, load_tokenizer
from ..errors import MofError, exit_with
from .from_config import model_config_from



def render_supervision(tokenizer, input_ids, labels, image_token_id: int) -> str:
    """The sample's text with supervised spans in [[...]] and each run of visual tokens as <image xN>."""
    out, i, n = [], 0, len(input_ids)
    while i < n:
        if input_ids[i] == image_token_id:
            j = i
            while j < n and input_ids[j] == image_token_id:
                j += 1
            out.append(f"<image x{j - i}>")
        else:
            supervised = labels[i] != IGNORE_INDEX
            j = i
            while j < n and input_ids[j] != image_token_id and (labels[j] != IGNORE_INDEX) == supervised:
                j += 1
            text = tokenizer.decode(input_ids[i:j])
            out.append(f"[[{text}]]" if supervised else text)
        i = j
    return "".join(out)


def scan(datamodule) -> tuple[dict, dict | None]:
    ds = datamodule.dataset
    skipped, lengths, truncated, example = Counter(ds.read_skipped), [], 0, None
    for i in range(len(ds)):
        item = ds[i]
        if "skip" in item:
            skipped[item["skip"]] += 1
            continue
        lengths.append(len(item["input_ids"]))
        truncated += bool(item["truncated"])
        if example is None and item.get("pixel_values") is not None:
            example = item
    total = len(ds) + sum(ds.read_skipped.values())
    pct = {f"p{q}": float(np.percentile(lengths, q)) for q in (50, 90, 99, 100)} if lengths else {}
    report = {"total": total, "valid": len(lengths), "skipped": dict(skipped),
              "fully_masked": skipped.get("fully_masked", 0) + skipped.get("fully_masked_after_truncation", 0),
              "truncated": truncated, "token_length": pct, "max_length": datamodule.max_length,
              "template": datamodule.template_name}
    return report, example


def check(cfg) -> dict:
    model_config = model_config_from(cfg)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    dm = instantiate(cfg.data, max_skipped_fraction=1.0).bind(model_config, tokenizer)  # report, don't refuse
    dm.setup()
    report, example = scan(dm)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    if example is not None:
        print("\nA sample as trained ([[supervised]]):\n" + render_supervision(
            tokenizer, example["input_ids"].tolist(), example["labels"].tolist(), model_config.image_token_id))
    print(f"\nwrote {out / 'report.json'}")
    return report


@hydra.main(version_base="1.3", config_path="pkg://mof.conf", config_name="train")
def main(cfg: DictConfig):
    setup_console()
    try:
        check(cfg)
    except MofError as e:
        exit_with(e)


if __name__ == "__main__":
    main()
