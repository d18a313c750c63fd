"""A tiny DINO (Caron et al. 2021): a student and its exponential-moving-average teacher see different crops of
one image; the student matches the teacher's centred, sharpened softmax. No labels, no text.

Augmentations (`mof/conf/encoder/dino.yaml`) decide what the encoder learns to ignore:
- random resized crops (two global, several local): where an object sits and how large it is;
- colour jitter and grayscale: hue, brightness, contrast, saturation;
- background tint (`background_p`, off in the shipped DINO): a scene's flat background colour redrawn from the range
  the scenes draw it from, so that two scenes alike but for their background are one view apart;
- shift (`shift_p`, off in the shipped DINO): the image moved by up to the scenes' own position jitter, so that two
  scenes alike but for where their object sits are one view apart (crops move it too, but together with its scale);
- no horizontal flip and no rotation (DINO's recipe flips): a flip would teach that an arrow pointing left and one
  pointing right, or a square left of a circle and one right of it, are the same image: exactly what MMVP asks.

DINOv2's two additions are options (`masked_patches`, `koleo`; off in the shipped DINO, measured in
docs/miniature.md): iBOT's loss on masked patches, and the KoLeo regulariser, which spreads a batch's features.
A third loss is not DINO's and is on in the shipped DINO since the 14th stop (`view_contrast`): SimCLR's contrastive
loss between the backbone CLS of the two global views, which spreads the images apart only in what the augmentations
leave alike. Without it the CLS, which mining reads, clustered images by object, colour and size and stayed as blind
as the CLIP to orientation and presence (docs/miniature.md). `view_contrast.patches` (on in the shipped DINO since
the 16th stop) puts the same loss on the mean of the patch tokens, which the MLLMs read and which the CLS's loss
hardly reaches; with it the patch grid sees orientation and presence, and interleaved MoF gains where it did not.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.synthetic import BACKGROUND, JITTER
from ..errors import ConfigError
from ..model.vision_encoders import IMAGENET_MEAN, IMAGENET_STD
from .clip import warmup_adamw
from .pool import normalize


def koleo_loss(x: torch.Tensor) -> torch.Tensor:
    """DINOv2's KoLeo regulariser (Sablayrolles et al. 2019): minus the mean log distance from each L2-normalised row
    of `x` `[B, D]` to its nearest other row. It spreads a batch's features over the sphere, so that near-identical
    images (an arrow and its mirror) are pushed apart instead of collapsing to one point."""
    x = F.normalize(x, dim=-1)
    # the nearest other row by the largest dot product (DINOv2's way: no gradient through the diagonal's sqrt(0))
    with torch.no_grad():
        nearest = (x @ x.T).fill_diagonal_(-2).argmax(-1)
    return -torch.log((x - x[nearest]).norm(dim=-1) + 1e-8).mean()


def view_contrast_loss(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020) between two views of a batch, `a`, `b` `[B, D]`: each of the 2B rows,
    L2-normalised, picks the other view of its image out of the other 2B - 1 rows by cosine / `temperature`; the mean
    cross-entropy. It pulls an image's views together (invariance to what the augmentations change) and spreads
    the images apart in every other respect (an arrow and its mirror, which no augmentation relates)."""
    z = F.normalize(torch.cat([a, b]), dim=-1)
    n = len(a)
    sim = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    return F.cross_entropy(sim, torch.arange(2 * n, device=z.device).roll(n))


def masked_patch_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, center: torch.Tensor,
                      student_temp: float, teacher_temp: float) -> torch.Tensor:
    """iBOT's loss (DINOv2's masked image modelling): at each masked patch, the cross-entropy between the teacher's
    centred, sharpened softmax on the unmasked image and the student's on the masked one; averaged over an image's
    masked patches, then over the images with a mask. `student`, `teacher`: `[B, P, K]` logits; `mask`: `[B, P]`."""
    t = F.softmax((teacher - center) / teacher_temp, dim=-1)
    ce = (-t * F.log_softmax(student / student_temp, dim=-1)).sum(-1)
    m = mask.float()
    n = m.sum(-1)
    return ((ce * m).sum(-1)[n > 0] / n[n > 0]).mean()


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, student_temp: float,
              teacher_temp: float) -> torch.Tensor:
    """Cross-entropy between the teacher's centred, sharpened softmax and the student's, over every (teacher view i,
    student view j != i) pair. `student`: `[views, B, K]` logits; `teacher`: `[global views, B, K]`."""
    t = F.softmax((teacher - center) / teacher_temp, dim=-1)
    s = F.log_softmax(student / student_temp, dim=-1)
    total, n = 0.0, 0
    for i in range(len(t)):
        for j in range(len(s)):
            if i != j:
                total = total + (-t[i] * s[j]).sum(-1).mean()
                n += 1
    return total / n


class DinoHead(nn.Module):
    """DINO's projection head: an MLP, an L2-normalised bottleneck, a weight-normalised linear layer to K outputs."""

    def __init__(self, dim: int, hidden: int, bottleneck: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad = False  # DINO's norm_last_layer

    def forward(self, x):
        return self.out(self.mlp(x))

    def out(self, bottleneck):
        return self.last(F.normalize(bottleneck, dim=-1))


def random_masks(b: int, patches: int, probability: float, ratio: tuple, generator: torch.Generator) -> torch.Tensor:
    """`[b, patches]` bool: with `probability`, an image gets a share in `ratio` of its patches masked (random
    patches; iBOT and DINOv2 mask blocks, which needs larger grids than a tiny ViT's 8x8)."""
    share = torch.empty(b, 1).uniform_(*ratio, generator=generator)
    share = share * (torch.rand(b, 1, generator=generator) < probability)
    n = (share * patches).round()
    rank = torch.rand(b, patches, generator=generator).argsort(-1).argsort(-1)
    return rank < n


def random_resized_crops(images: torch.Tensor, out: int, scale: tuple, generator: torch.Generator) -> torch.Tensor:
    """One random crop per image (area share in `scale`, aspect 3/4..4/3), resized to `out` x `out` by bilinear
    sampling: one batched `grid_sample`, no per-image loop."""
    b = len(images)
    area = torch.empty(b).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    h = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - h)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta, (b, 3, out, out), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(x: torch.Tensor, strength: float, grayscale_p: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation scaled by factors in [1 - s, 1 + s], hue rotated by up to s/2 of a turn
    (in YIQ space), then grayscale with probability `grayscale_p`; `x` in [0, 1]."""
    b = len(x)
    def u():
        return (1 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * strength)
    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = x * u()
    x = (x - gray.mean((2, 3), keepdim=True)) * u() + gray.mean((2, 3), keepdim=True)
    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - gray) * u() + gray
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    a = (torch.rand(b, generator=generator) * 2 - 1) * math.pi * strength
    rot = torch.zeros(b, 3, 3)
    rot[:, 0, 0], rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = 1, a.cos(), -a.sin(), a.sin(), a.cos()
    m = torch.linalg.inv(yiq) @ rot @ yiq
    x = torch.einsum("bij,bjhw->bihw", m, x)
    to_gray = torch.rand(b, 1, 1, 1, generator=generator) < grayscale_p
    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
    return torch.where(to_gray, gray, x).clamp(0, 1)


def background_tint(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """With `probability`, an image's background (the pixels of exactly its corner's colour: the synthetic scenes'
    backgrounds are flat) takes a new colour, each channel drawn from the scenes' own range (`BACKGROUND`); `x` in
    [0, 1], `[B, 3, H, W]`."""
    b = len(x)
    low, high = BACKGROUND
    tint = (low + torch.rand(b, 3, 1, 1, generator=generator) * (high - low)) / 255.0
    redraw = torch.rand(b, 1, 1, 1, generator=generator) < probability
    background = (x == x[:, :, :1, :1]).all(1, keepdim=True) & redraw
    return torch.where(background, tint, x)


def random_shift(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """With `probability`, an image moved by a whole number of pixels, up to the scenes' own jitter (`JITTER` of its
    size) each way, the pixels uncovered at an edge repeating that edge (the scenes' backgrounds are flat)."""
    b, _, h, w = x.shape
    most = torch.tensor([JITTER * w, JITTER * h])
    shift = ((torch.rand(b, 2, generator=generator) * 2 - 1) * most).round()
    shift = shift * (torch.rand(b, 1, generator=generator) < probability)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = 1.0, 1.0
    theta[:, 0, 2], theta[:, 1, 2] = -2 * shift[:, 0] / w, -2 * shift[:, 1] / h
    grid = F.affine_grid(theta, (b, 3, h, w), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)


# Where KoLeo spreads a batch: the backbone's CLS (DINOv2; what mining reads) or the head's bottleneck, the features
# that the DINO loss, and with it the augmentations' invariance, reaches (not DINOv2's recipe; docs/miniature.md).
KOLEO_ON = ("cls", "bottleneck")


class DinoPretraining(pl.LightningModule):
    def __init__(self, vision: dict, head: dict, global_crops: dict, local_crops: dict, jitter: float, grayscale_p: float,
                 student_temp: float, teacher_temp: float, center_momentum: float, teacher_momentum: float, lr: float,
                 weight_decay: float, warmup_steps: int, masked_patches: dict | None = None, koleo: float = 0.0,
                 koleo_on: str = "cls", background_p: float = 0.0, shift_p: float = 0.0,
                 view_contrast: dict | None = None, seed: int = 0):
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        self.student = nn.ModuleDict({"backbone": Dinov2Model(Dinov2Config(**vision)),
                                      "head": DinoHead(vision["hidden_size"], **head)})
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, head["out_dim"]))
        # DINOv2's additions to DINO: masked patches (iBOT, its own head and centre) and KoLeo; weight 0 turns off
        self.masked = dict(masked_patches or {"weight": 0.0})
        if koleo_on not in KOLEO_ON:
            raise ConfigError(f"encoder.koleo_on: expected one of {', '.join(KOLEO_ON)}, got {koleo_on!r}")
        self.koleo, self.koleo_on = koleo, koleo_on
        # SimCLR's loss on the CLS (`weight`) and on the patch tokens' mean (`patches`); a weight of 0 turns it off
        self.view_contrast = {"weight": 0.0, "patches": 0.0, **(view_contrast or {})}
        if (self.view_contrast["weight"] or self.view_contrast["patches"]) and global_crops["number"] != 2:
            raise ConfigError(f"encoder.view_contrast: expected 2 global crops to contrast, got {global_crops['number']}")
        if self.masked["weight"]:
            self.student["patch_head"] = DinoHead(vision["hidden_size"], **head)
            self.teacher["patch_head"] = copy.deepcopy(self.student["patch_head"]).requires_grad_(False)
            self.register_buffer("patch_center", torch.zeros(1, 1, head["out_dim"]))
        self.global_crops, self.local_crops = global_crops, local_crops
        self.jitter, self.grayscale_p, self.background_p, self.shift_p = jitter, grayscale_p, background_p, shift_p
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.center_momentum, self.teacher_momentum = center_momentum, teacher_momentum
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.generator = torch.Generator().manual_seed(seed)

    def views(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.float() / 255.0
        views = []
        # no draw from the generator for an augmentation that is off: the shipped DINO remade to the byte
        tint, shift = self.background_p > 0, self.shift_p > 0
        for crops in (self.global_crops, self.local_crops):
            for _ in range(crops["number"]):
                v = background_tint(x, self.background_p, self.generator) if tint else x
                v = random_shift(v, self.shift_p, self.generator) if shift else v
                v = random_resized_crops(v, crops["size"], tuple(crops["scale"]), self.generator)
                v = color_jitter(v, self.jitter, self.grayscale_p, self.generator)
                views.append(normalize(v * 255.0, IMAGENET_MEAN, IMAGENET_STD))
        return views

    @staticmethod
    def embed(net: nn.ModuleDict, views: list[torch.Tensor]) -> torch.Tensor:
        """`[views, B, K]`: views of one size go through the backbone together."""
        out, start = [], 0
        while start < len(views):
            end = start
            while end < len(views) and views[end].shape == views[start].shape:
                end += 1
            cls = net["backbone"](pixel_values=torch.cat(views[start:end])).pooler_output
            out.append(net["head"](cls).view(end - start, len(views[0]), -1))
            start = end
        return torch.cat(out)

    def training_step(self, batch, batch_idx):
        views = self.views(batch)
        g = self.global_crops["number"]
        glob = torch.cat(views[:g])
        with torch.no_grad():
            t_out = self.teacher["backbone"](pixel_values=glob)
            teacher = self.teacher["head"](t_out.pooler_output).view(g, len(batch), -1)
        mask = None
        if self.masked["weight"]:
            patches = t_out.last_hidden_state.shape[1] - 1
            mask = random_masks(len(glob), patches, self.masked["probability"], tuple(self.masked["ratio"]), self.generator)
        s_out = self.student["backbone"](pixel_values=glob, bool_masked_pos=mask)
        s_bottleneck = self.student["head"].mlp(s_out.pooler_output)   # KoLeo may spread it (`koleo_on`)
        student = self.student["head"].out(s_bottleneck).view(g, len(batch), -1)
        if len(views) > g:
            student = torch.cat([student, self.embed(self.student, views[g:])])
        loss = dino_loss(student, teacher, self.center, self.student_temp, self.teacher_temp)
        logs = {"pretrain/dino_loss": loss.detach()}
        if mask is not None and mask.any():
            with torch.no_grad():
                t_patch = self.teacher["patch_head"](t_out.last_hidden_state[:, 1:])
            s_patch = self.student["patch_head"](s_out.last_hidden_state[:, 1:])
            mim = masked_patch_loss(s_patch, t_patch, mask, self.patch_center, self.student_temp, self.teacher_temp)
            loss = loss + self.masked["weight"] * mim
            logs["pretrain/masked_patch_loss"] = mim.detach()
            with torch.no_grad():
                m = self.center_momentum
                self.patch_center.mul_(m).add_(t_patch[mask].mean(0).view(1, 1, -1), alpha=1 - m)
        if self.koleo:
            spread = s_out.pooler_output if self.koleo_on == "cls" else s_bottleneck
            kl = sum(koleo_loss(c) for c in spread.view(g, len(batch), -1)) / g
            loss = loss + self.koleo * kl
            logs["pretrain/koleo"] = kl.detach()
        if self.view_contrast["weight"]:
            a, b = s_out.pooler_output.view(g, len(batch), -1)
            vc = view_contrast_loss(a, b, self.view_contrast["temperature"])
            loss = loss + self.view_contrast["weight"] * vc
            logs["pretrain/view_contrast"] = vc.detach()
        if self.view_contrast["patches"]:
            a, b = s_out.last_hidden_state[:, 1:].mean(1).view(g, len(batch), -1)
            pc = view_contrast_loss(a, b, self.view_contrast["temperature"])
            loss = loss + self.view_contrast["patches"] * pc
            logs["pretrain/patch_contrast"] = pc.detach()
        with torch.no_grad():
            m = self.center_momentum
            self.center.mul_(m).add_(teacher.mean((0, 1)).unsqueeze(0), alpha=1 - m)
            entropy = -(F.softmax((teacher - self.center) / self.teacher_temp, -1) *
                        F.log_softmax((teacher - self.center) / self.teacher_temp, -1)).sum(-1).mean()
        self.log_dict({"pretrain/loss": loss, "pretrain/teacher_entropy": entropy, **logs}, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # the teacher's momentum rises from `teacher_momentum` to 1 on a cosine, as in DINO
        progress = self.trainer.global_step / max(1, self.trainer.max_steps)
        m = 1 - (1 - self.teacher_momentum) * (math.cos(math.pi * progress) + 1) / 2
        with torch.no_grad():
            for ps, pt in zip(self.student.parameters(), self.teacher.parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)

    def configure_optimizers(self):
        return warmup_adamw(self.student, self.lr, self.weight_decay, self.warmup_steps, self.trainer.max_steps)

    def save(self, out: Path) -> None:
        """The teacher's backbone (DINO's evaluated network) as a `Dinov2Model` folder with its image processor."""
        from transformers import BitImageProcessor

        size = self.teacher["backbone"].config.image_size
        self.teacher["backbone"].save_pretrained(out)  # the heads are training's, as in DINO's released weights
        BitImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, do_center_crop=True,
                          image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD)).save_pretrained(out)
