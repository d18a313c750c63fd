"""`pretrain(cfg)`: the body of `pretrain.py`: one tiny encoder pre-trained on synthetic images, saved as a
`save_pretrained` folder of the real Hugging Face class (`CLIPModel` with its tokenizer, `Dinov2Model`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf

from ..errors import ConfigError, refuse_finished
from ..model.presets import TINY_PROJECTION_DIM, TINY_VIT
from .clip import ClipPretraining
from .dino import DinoPretraining
from .pool import image_pool

log = logging.getLogger(__name__)


def build_module(cfg) -> tuple[pl.LightningModule, str]:
    """The encoder's LightningModule and its name (`clip` or `dino`), from the `encoder` config section."""
    e = OmegaConf.to_container(cfg.encoder, resolve=True)
    name = e.pop("name")
    opt = {k: e.pop(k) for k in ("lr", "weight_decay", "warmup_steps")}
    vit = dict(TINY_VIT, image_size=cfg.images.size)
    if name == "clip":
        module = ClipPretraining(vit, e.pop("text"), TINY_PROJECTION_DIM, e.pop("captioned"), **opt)
    elif name == "dino":
        vision = dict(vit, mlp_ratio=vit["intermediate_size"] // vit["hidden_size"])
        vision.pop("intermediate_size")
        module = DinoPretraining(vision, **e, **opt, seed=cfg.seed)
    else:
        raise ConfigError(f"encoder.name: expected clip or dino, got {name!r}")
    return module, name


def pretrain(cfg) -> Path:
    out = Path(cfg.out)
    refuse_finished(out.parent, [out.name], bool(cfg.get("overwrite")))
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
    module.save(out)
    log.info("pretrain: %s trained %d steps in %.1f min", name, trainer.global_step, minutes)
    print(f"pretrain: tiny {name} ({trainer.global_step} steps, {minutes:.1f} min) saved to {out}")
    return out
