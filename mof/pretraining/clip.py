"""A tiny CLIP (Radford et al. 2021): image and text towers trained together with the symmetric contrastive loss
and a learnable temperature, on synthetic images and captions that name only some of their properties."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ..data import load_tokenizer
from ..model.vision_encoders import CLIP_MEAN, CLIP_STD
from ..data.synthetic import caption
from .pool import normalize

EOT = "<|endoftext|>"  # CLIP pools the text at its end-of-text token
MAX_LOGIT_SCALE = 100.0  # CLIP clips the temperature's inverse at 100


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch: image i's caption is text i; cross-entropy image->text and text->image,
    averaged. `logit_scale` is the log of the inverse temperature (learnable, clipped at 100)."""
    image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    logits = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE) * image_emb @ text_emb.T
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def clip_tokenizer():
    """mof's tiny tokenizer with CLIP's end-of-text token appended to every text."""
    from tokenizers.processors import TemplateProcessing

    tok = load_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [EOT]})
    eot = tok.convert_tokens_to_ids(EOT)
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"$A {EOT}", special_tokens=[(EOT, eot)])
    tok.model_max_length = 32
    return tok


def clip_config(vision: dict, text: dict, projection_dim: int, tokenizer):
    from transformers import CLIPConfig

    return CLIPConfig(vision_config=vision, projection_dim=projection_dim, text_config=dict(
        text, vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOT), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id))


class ClipPretraining(pl.LightningModule):
    def __init__(self, vision: dict, text: dict, projection_dim: int, captioned, lr: float, weight_decay: float,
                 warmup_steps: int):
        super().__init__()
        from transformers import CLIPModel

        self.tokenizer = clip_tokenizer()
        self.model = CLIPModel(clip_config(vision, text, projection_dim, self.tokenizer))
        self.captioned, self.lr, self.weight_decay, self.warmup_steps = list(captioned), lr, weight_decay, warmup_steps

    def batch(self, images: torch.Tensor, attrs: list[dict]) -> dict:
        texts = ["a photo of " + caption(a, self.captioned) for a in attrs]
        enc = self.tokenizer(texts, padding=True, return_tensors="pt")
        return {"pixel_values": normalize(images, CLIP_MEAN, CLIP_STD), **enc}

    def training_step(self, batch, batch_idx):
        out = self.model(**batch)  # image_embeds / text_embeds: projected, normalised
        loss = contrastive_loss(out.image_embeds, out.text_embeds, self.model.logit_scale)
        self.log_dict({"pretrain/loss": loss, "pretrain/logit_scale": self.model.logit_scale.exp()}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return warmup_adamw(self, self.lr, self.weight_decay, self.warmup_steps, self.trainer.max_steps)

    def save(self, out: Path) -> None:
        from transformers import CLIPImageProcessor

        size = self.model.config.vision_config.image_size
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(out)


def warmup_adamw(module: torch.nn.Module, lr: float, weight_decay: float, warmup_steps: int, total_steps: int):
    """AdamW, linear warmup then cosine decay to 0 over the run (the usual recipe of both papers)."""
    import math

    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    total = max(1, total_steps)

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "step"}}
