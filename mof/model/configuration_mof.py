"""`MofConfig`: one LLaVA-style model with one or more vision encoders and a fusion."""

from __future__ import annotations

import copy
from dataclasses import asdict

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .fusion import parse_fusion
from .loss import LOSS_IMPLEMENTATIONS
from .projectors import PROJECTORS
from .vision_encoders import EncoderSpec
from ..errors import ConfigError, unknown

# Flat keys of configs saved before the fusion became a section, and their option names.
_LEGACY_FUSION_KEYS = {"alpha": "alpha", "mix_weights": "mix_weights", "mix_after_projector": "after_projector",
                       "resample": "resample"}


class MofConfig(PreTrainedConfig):
    """Configuration of a `MofForConditionalGeneration`.

    Args:
        vision_encoders: list of encoder specs (dicts with `type`, `config`, and optionally
            `feature_layer`, `keep`, `image_size`, `image_mean`, `image_std`, `pretrained`).
            The first encoder is the "semantic" one (CLIP in the paper).
        text_config: config of any Hugging Face causal LM.
        text_pretrained: hub id or local directory of the LLM's weights (used by
            `load_pretrained_components`, never by `__init__`).
        fusion: the fusion section `{"type": name, **options}` (see `mof.model.fusion.FUSIONS`), or a
            fusion name alone for its default options.
        projector_type: the projectors' kind (see `mof.model.projectors.PROJECTORS`).
        image_token_id: the placeholder token id; each image takes `num_visual_tokens` of them.
        loss_implementation: `full` (logits of every position), `chunked` (the same loss `loss_chunk_size`
            positions at a time, never holding all logits) or `liger` (Liger's fused kernel, GPU); see `loss.py`.
    """

    model_type = "mof"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    vision_encoders: list | None = None
    text_config: dict | PreTrainedConfig | None = None
    text_pretrained: str | None = None
    fusion: dict | str = "none"
    projector_type: str = "mlp2x_gelu"
    image_token_id: int = 32000
    freeze_vision: bool = True
    tie_word_embeddings: bool = False
    loss_implementation: str = "full"
    loss_chunk_size: int = 1024

    def __post_init__(self, **kwargs):
        legacy = {new: kwargs.pop(old) for old, new in _LEGACY_FUSION_KEYS.items() if old in kwargs}
        super().__post_init__(**kwargs)
        if not self.vision_encoders:
            raise ConfigError("MofConfig.vision_encoders: expected at least one encoder spec, got none")
        self.vision_encoders = [
            EncoderSpec.from_dict(e).to_dict() if isinstance(e, dict) else e.to_dict() for e in self.vision_encoders
        ]
        section = {"type": self.fusion} if isinstance(self.fusion, str) else dict(self.fusion)
        if section.get("type") in ("additive", "interleaved", "concat") and legacy:
            known = set(parse_fusion({"type": section["type"]})[1].__dataclass_fields__)
            section = {**{k: v for k, v in legacy.items() if k in known}, **section}
        if section.get("type") == "sva" and "layers" in section:   # saved before `sva` became Cambrian's whole SVA
            section["type"] = "sva_connector"
        cls, options = parse_fusion(section)
        self.fusion = {"type": section["type"], **asdict(options)}
        self.validate()

    # ----------------------------------------------------------------- derived values
    @property
    def fusion_type(self) -> str:
        return self.fusion["type"]

    @property
    def fusion_class(self):
        return parse_fusion(self.fusion)[0]

    @property
    def fusion_options(self):
        return parse_fusion(self.fusion)[1]

    @property
    def encoder_specs(self) -> list[EncoderSpec]:
        """Specs of the encoders the fusion uses (`none` uses only the first)."""
        specs = [EncoderSpec.from_dict(e) for e in self.vision_encoders]
        return specs[:1] if self.fusion_type == "none" else specs

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens one image occupies in the LLM's input sequence."""
        return self.fusion_class.num_tokens(self.encoder_specs, self.fusion_options)

    # ----------------------------------------------------------------- validation
    def validate(self) -> None:
        if self.projector_type not in PROJECTORS:
            raise ConfigError(unknown("MofConfig.projector_type", "projector", self.projector_type, PROJECTORS))
        self.fusion_class.check(self.encoder_specs, self.fusion_options)
        if self.loss_implementation not in LOSS_IMPLEMENTATIONS:
            raise ConfigError(f"MofConfig.loss_implementation: expected one of {', '.join(LOSS_IMPLEMENTATIONS)}, "
                             f"got {self.loss_implementation!r}")
        if self.loss_chunk_size < 1:
            raise ConfigError(f"MofConfig.loss_chunk_size: expected a positive number of positions, got {self.loss_chunk_size}")
        if self.image_token_id < 0:
            raise ConfigError(f"MofConfig.image_token_id: expected a non-negative id, got {self.image_token_id}")

    def to_dict(self):
        output = super().to_dict()
        output["vision_encoders"] = copy.deepcopy(self.vision_encoders)
        output["fusion"] = copy.deepcopy(self.fusion)
        return output
