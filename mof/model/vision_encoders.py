"""Vision encoders: a registry of Hugging Face vision towers and the module that runs one.

Every family states how to read patch features off its tower. Only the layers up to the
feature layer are built (the config's `num_hidden_layers` is cut), and the final norm that
the feature layer skips is replaced by an identity, so no unused layer is ever computed.
Adding a family is one `EncoderFamily` entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import math
import types

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel

from ..errors import ConfigError, MofError, unknown
from .weights import refused_pickles

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


class WeightsMissingError(MofError, ValueError):
    pass


@dataclass(frozen=True)
class EncoderFamily:
    model_type: str  # the Hugging Face config's model_type
    num_prefix_tokens: Callable  # hf_config -> CLS/register tokens ahead of the patches
    final_norm: str | None  # attribute path of the norm after the last block (skipped)
    default_feature_layer: int
    image_mean: tuple
    image_std: tuple
    interpolates_always: bool = False  # DINOv2 resizes its position embeddings for any input size
    config_overrides: dict = field(default_factory=dict)
    unused_parameters: tuple = ()  # never reached by patch features (kept frozen, so data parallelism never waits on them)
    # One embedding per whole image, as the paper mines with it: `projected` (the joint image-text space:
    # `get_image_features`) or `cls` (the final layer-normed CLS token: `pooler_output`); and the model_type of the
    # full model a hub folder of the family holds (CLIPModel: "clip"), which mining loads.
    image_embedding: str = "cls"
    hub_model_type: str | None = None


ENCODER_FAMILIES: dict[str, EncoderFamily] = {
    # LLaVA: second-to-last layer, CLS dropped.
    "clip": EncoderFamily("clip_vision_model", lambda c: 1, "post_layernorm", -2, CLIP_MEAN, CLIP_STD,
                          image_embedding="projected", hub_model_type="clip"),
    # The paper: last block before the final norm, CLS dropped.
    "dinov2": EncoderFamily("dinov2", lambda c: 1, "layernorm", -1, IMAGENET_MEAN, IMAGENET_STD, interpolates_always=True,
                            unused_parameters=("embeddings.mask_token",), hub_model_type="dinov2"),
    "dinov2_reg": EncoderFamily(
        "dinov2_with_registers", lambda c: 1 + c.num_register_tokens, "layernorm", -1, IMAGENET_MEAN, IMAGENET_STD,
        interpolates_always=True, unused_parameters=("embeddings.mask_token",), hub_model_type="dinov2_with_registers",
    ),
    # SigLIP has no CLS token; its attention-pooling head is never used.
    "siglip": EncoderFamily(
        "siglip_vision_model", lambda c: 0, "post_layernorm", -1, SIGLIP_MEAN, SIGLIP_STD,
        config_overrides={"vision_use_head": False}, image_embedding="projected", hub_model_type="siglip",
    ),
}


def family_of_hub_model(model_type: str) -> EncoderFamily:
    """The family whose hub folders hold a full model of `model_type` (mining loads those); unknown: the known."""
    known = {f.hub_model_type: f for f in ENCODER_FAMILIES.values() if f.hub_model_type}
    if model_type not in known:
        raise ConfigError(unknown("encoders", "model family", model_type, known))
    return known[model_type]


def get_family(name: str) -> EncoderFamily:
    if name not in ENCODER_FAMILIES:
        raise ConfigError(unknown("vision encoder", "type", name, sorted(ENCODER_FAMILIES)))
    return ENCODER_FAMILIES[name]


@dataclass
class EncoderSpec:
    """One encoder of a MoF model, as stored in `MofConfig.vision_encoders`."""

    type: str
    config: dict
    feature_layer: int | None = None
    keep: str = "patch"  # "patch": patch tokens only; "all": CLS/registers too (fusion none only)
    image_size: int | None = None
    image_mean: list | None = None
    image_std: list | None = None
    pretrained: str | None = None
    # How DINOv2 resizes its position embeddings for another image size: "hf" (transformers) or "dinov2_hub"
    # (facebookresearch/dinov2 through torch.hub, as the paper's released code loads it).
    position_interpolation: str = "hf"

    def __post_init__(self):
        family = get_family(self.type)
        if self.position_interpolation not in ("hf", "dinov2_hub"):
            raise ConfigError(f"vision encoder {self.type!r}: position_interpolation must be 'hf' or 'dinov2_hub', "
                             f"got {self.position_interpolation!r}")
        if self.position_interpolation == "dinov2_hub" and not self.type.startswith("dinov2"):
            raise ConfigError(f"vision encoder {self.type!r}: position_interpolation 'dinov2_hub' is for DINOv2 only")
        if isinstance(self.config, dict):
            self.config = dict(self.config)
            self.config.setdefault("model_type", family.model_type)
            if self.config["model_type"] != family.model_type:
                raise ConfigError(
                    f"vision encoder {self.type!r}: expected a config of model_type {family.model_type!r}, "
                    f"got {self.config['model_type']!r}"
                )
        elif hasattr(self.config, "to_dict"):
            self.config = self.config.to_dict()
        if self.feature_layer is None:
            self.feature_layer = family.default_feature_layer
        if self.image_size is None:
            self.image_size = int(self.config.get("image_size", 224))
        if self.image_mean is None:
            self.image_mean = list(family.image_mean)
        if self.image_std is None:
            self.image_std = list(family.image_std)
        if self.keep not in ("patch", "all"):
            raise ConfigError(f"vision encoder {self.type!r}: keep must be 'patch' or 'all', got {self.keep!r}")
        layers = self.num_hidden_layers
        if not 1 <= self.num_layers_used <= layers:
            raise ConfigError(
                f"vision encoder {self.type!r}: feature_layer={self.feature_layer} is outside a tower of {layers} layers"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"vision encoder {self.type!r}: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderSpec":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"vision encoder spec: unknown keys {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}")
        if "type" not in d or "config" not in d:
            raise ConfigError(f"vision encoder spec: 'type' and 'config' are required, got keys {sorted(d)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def family(self) -> EncoderFamily:
        return get_family(self.type)

    @property
    def hf_config(self):
        cfg = dict(self.config)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)

    def setting(self, key: str):
        """The tower's `key`: from its config dict where set, else the class's default. (The default is looked up
        only then: building the HF config costs milliseconds, and this is asked once a training step, for FLOPs,
        and once a question in evaluation.)"""
        return self.config[key] if key in self.config else getattr(self.hf_config, key)

    @property
    def num_hidden_layers(self) -> int:
        return int(self.setting("num_hidden_layers"))

    @property
    def num_layers_used(self) -> int:
        """Blocks to run: hidden_states[feature_layer] of the full tower is the output of this many."""
        fl = self.feature_layer
        return fl if fl >= 0 else self.num_hidden_layers + 1 + fl

    @property
    def patch_size(self) -> int:
        return int(self.setting("patch_size"))

    @property
    def hidden_size(self) -> int:
        return int(self.setting("hidden_size"))

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    @property
    def num_prefix_tokens(self) -> int:
        return self.family.num_prefix_tokens(self.hf_config)

    @property
    def num_tokens(self) -> int:
        rows, cols = self.grid
        return rows * cols + (self.num_prefix_tokens if self.keep == "all" else 0)

    def build_tower_config(self):
        """The HF config of the tower as built: cut to the used layers."""
        cfg = dict(self.config)
        cfg.update(self.family.config_overrides)
        cfg["num_hidden_layers"] = self.num_layers_used
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def hub_interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """facebookresearch/dinov2's rule (torch.hub): bicubic with scale factors (grid + 0.1) / M, no antialias, where
    transformers resizes to the grid size; at 336 px the two differ by a few percent."""
    num_positions = self.position_embeddings.shape[1] - 1
    patch = self.patch_embeddings.patch_size
    rows, cols = height // patch[0], width // patch[1]
    if rows * cols == num_positions and height == width:
        return self.position_embeddings
    side = int(math.sqrt(num_positions))
    dim = self.position_embeddings.shape[-1]
    positions = self.position_embeddings.float()
    grid = positions[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic", antialias=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((positions[:, :1], grid), dim=1).to(self.position_embeddings.dtype)


class VisionEncoder(nn.Module):
    """Runs one HF vision tower and returns its patch features `[batch, tokens, width]`."""

    def __init__(self, spec: EncoderSpec, tower: nn.Module | None = None):
        super().__init__()
        self.spec = spec
        self.tower = tower if tower is not None else AutoModel.from_config(spec.build_tower_config())
        self._drop_final_norm()
        if spec.position_interpolation == "dinov2_hub":
            embeddings = self.tower.embeddings
            embeddings.interpolate_pos_encoding = types.MethodType(hub_interpolate_pos_encoding, embeddings)
        self.num_prefix_tokens = spec.num_prefix_tokens
        native = int(self.config.get("image_size", spec.image_size))
        self.interpolate = spec.image_size != native and not spec.family.interpolates_always

    @property
    def config(self) -> dict:
        return self.spec.config

    def _drop_final_norm(self):
        path = self.spec.family.final_norm
        if path is None:
            return
        *parents, name = path.split(".")
        owner = self.tower
        for p in parents:
            owner = getattr(owner, p)
        setattr(owner, name, nn.Identity())

    @classmethod
    def from_pretrained(cls, spec: EncoderSpec, **kwargs) -> "VisionEncoder":
        """The tower's weights from a hub id or folder. Weights it does not use (a CLIP's text tower, layers past the
        feature layer) are expected and not reported; a weight it needs and the folder lacks is an error."""
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the load report lists every unused weight as UNEXPECTED
        try:
            with refused_pickles(spec.pretrained):
                tower, info = AutoModel.from_pretrained(spec.pretrained, config=spec.build_tower_config(),
                                                        output_loading_info=True, **kwargs)
        finally:
            hf_logging.set_verbosity(verbosity)
        if info.get("missing_keys"):
            raise WeightsMissingError(f"{spec.pretrained}: the {spec.type} tower lacks weights it needs: "
                                      f"{', '.join(sorted(info['missing_keys'])[:5])}")
        return cls(spec, tower)

    def set_trainable(self, trainable: bool) -> "VisionEncoder":
        """Train the tower (or not); parameters that patch features never reach stay frozen."""
        self.requires_grad_(trainable)
        for name in self.spec.family.unused_parameters:
            self.tower.get_parameter(name).requires_grad_(False)
        return self

    @property
    def is_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.parameters())

    def train(self, mode: bool = True):
        super().train(mode)
        if self.is_frozen:
            self.tower.eval()  # frozen towers stay deterministic (no dropout), as in LLaVA
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate else {}
        dtype = next(self.tower.parameters()).dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.is_frozen):
            hidden = self.tower(pixel_values=pixel_values.to(dtype), **kwargs).last_hidden_state
        if self.spec.keep == "patch":
            hidden = hidden[:, self.num_prefix_tokens :]
        return hidden
