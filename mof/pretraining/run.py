"""`pretrain(cfg)`: the body of `pretrain.py`: one tiny encoder pre-trained on synthetic images, saved as a
`save_pretrained` folder of the real Hugging Face class (`CLIPModel` with its tokenizer, `Dinov2Model`)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf

from ..atomic import replaced_folder
from ..errors import ConfigError, refuse_finished
from ..model.presets import TINY_PROJECTION_DIM, TINY_VIT
from ..threads import pinned_threads
from .clip import ClipPretraining
from .dino import DinoPretraining
from .pool import image_pool

log = logging.getLogger(__name__)

RECIPE_FILE = "pretrain.json"   # beside the weights: the settings that made them
RECIPE = ("encoder", "images", "patch_size", "seed", "batch_size", "max_steps", "threads", "trainer")


def recipe(cfg) -> dict:
    """The settings that decide an encoder's weights (not where they are written): what `pretrain` records beside
    them, so that a folder says how to remake it and a changed default cannot go unnoticed (tests/test_pretraining.py
    compares the shipped folders with the defaults)."""
    return {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in RECIPE}


def build_module(cfg) -> tuple[pl.LightningModule, str]:
    """The encoder's LightningModule and its name (`clip` or `dino`), from the `encoder` config section."""
    e = OmegaConf.to_container(cfg.encoder, resolve=True)
    name = e.pop("name")
    opt = {k: e.pop(k) for k in ("lr", "weight_decay", "warmup_steps")}
    vit = dict(TINY_VIT, image_size=cfg.images.size, patch_size=cfg.patch_size)
    if name == "clip":
        module = ClipPretraining(vit, e.pop("text"), TINY_PROJECTION_DIM, e.pop("captioned"), **opt)
    elif name == "dino":
        vision = dict(vit, mlp_ratio=vit["intermediate_size"] // vit["hidden_size"])
        vision.pop("intermediate_size")
        module = DinoPretraining(vision, **e, **opt, seed=cfg.seed)
    else:
        raise ConfigError(f"encoder.name: expected clip or dino, got {name!r}")
    return module, name


def save(module: pl.LightningModule, made_with: dict, out: Path) -> None:
    """The encoder's folder and its recipe, written beside `out` and then put in its place (`replaced_folder`)."""
    with replaced_folder(out) as partial:
        module.save(partial)
        (partial / RECIPE_FILE).write_text(json.dumps(made_with, indent=1) + "\n")


def check_settings(cfg) -> None:
    """The numbers `pretrain` reads, each a positive integer (threads may be null), else one line naming the key."""
    for key in ("max_steps", "batch_size", "images.scenes_per_pattern", "images.size", "patch_size", "threads"):
        value = OmegaConf.select(cfg, key)
        if not (value is None and key == "threads") and not (type(value) is int and value > 0):
            raise ConfigError(f"{key}: expected a positive integer{' or null' if key == 'threads' else ''}, got {value!r}")
    if cfg.images.size % cfg.patch_size:
        raise ConfigError(f"patch_size: expected a divisor of images.size ({cfg.images.size}), got {cfg.patch_size}")


def pretrain(cfg) -> Path:
    check_settings(cfg)
    out = Path(cfg.out)
    # An existing folder is refused now, or with overwrite=true replaced once the new one is complete (`save`): a
    # run killed before then leaves it as it was (before, overwrite removed it first, the shipped encoders included).
    if not cfg.get("overwrite"):
        refuse_finished(out.parent, [out.name], False, "give another out=")
    with pinned_threads(cfg.threads):   # the same sums on any core count: the shipped encoders remade to the byte
        return _pretrain(cfg, out)


def _pretrain(cfg, out: Path) -> Path:
    pl.seed_everything(cfg.seed, workers=True)
    t0 = time.perf_counter()
    images, attrs = image_pool(cfg.images.scenes_per_pattern, cfg.seed, cfg.images.size)
    log.info("pool: %d images in %.1f s", len(images), time.perf_counter() - t0)
    module, name = build_module(cfg)

    def collate(idx):
        idx = torch.tensor(idx)
        return module.batch(images[idx], [attrs[i] for i in idx.tolist()]) if name == "clip" else images[idx]

    loader = torch.utils.data.DataLoader(range(len(images)), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=collate, generator=torch.Generator().manual_seed(cfg.seed))
    run_dir = Path(cfg.paths.output_dir)
    trainer = pl.Trainer(max_steps=cfg.max_steps, accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices,
                         precision=cfg.trainer.precision, logger=pl.loggers.CSVLogger(str(run_dir), name="csv"),
                         enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=10,
                         max_epochs=-1, default_root_dir=str(run_dir), deterministic=True)
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    minutes = (time.perf_counter() - t0) / 60
    save(module, recipe(cfg), out)
    log.info("pretrain: %s trained %d steps in %.1f min", name, trainer.global_step, minutes)
    print(f"pretrain: tiny {name} ({trainer.global_step} steps, {minutes:.1f} min) saved to {out}")
    return out
