"""`MofConfig`: one LLaVA-style model with one or more vision encoders and a fusion mode."""

from __future__ import annotations

import copy
import math

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .vision_encoders import EncoderSpec

FUSION_MODES = ("none", "additive", "interleaved", "concat")
PROJECTOR_TYPES = ("linear", "mlp2x_gelu")


class MofConfig(PreTrainedConfig):
    """Configuration of a `MofForConditionalGeneration`.

    Args:
        vision_encoders: list of encoder specs (dicts with `type`, `config`, and optionally
            `feature_layer`, `keep`, `image_size`, `image_mean`, `image_std`, `pretrained`).
            The first encoder is the "semantic" one (CLIP in the paper).
        text_config: config of any Hugging Face causal LM.
        text_pretrained: hub id or local directory of the LLM's weights (used by
            `load_pretrained_components`, never by `__init__`).
        fusion: `none` (first encoder only: the LLaVA baseline), `additive`, `interleaved`, `concat`.
        alpha: additive weight of the first encoder when there are two (the other gets 1 - alpha).
        mix_weights: additive weights for k encoders (sum to 1); overrides `alpha`.
        mix_after_projector: additive fusion of encoders of unequal widths: project each encoder
            with its own projector, then mix.
        resample: resize every encoder's patch grid bilinearly to the first encoder's grid.
        projector_type: `linear` or `mlp2x_gelu`.
        image_token_id: the placeholder token id; each image takes `num_visual_tokens` of them.
    """

    model_type = "mof"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    vision_encoders: list | None = None
    text_config: dict | PreTrainedConfig | None = None
    text_pretrained: str | None = None
    fusion: str = "none"
    alpha: float = 0.5
    mix_weights: list | None = None
    mix_after_projector: bool = False
    resample: bool = False
    projector_type: str = "mlp2x_gelu"
    image_token_id: int = 32000
    ignore_index: int = -100
    freeze_vision: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not self.vision_encoders:
            raise ValueError("MofConfig.vision_encoders: expected at least one encoder spec, got none")
        self.vision_encoders = [
            EncoderSpec.from_dict(e).to_dict() if isinstance(e, dict) else e.to_dict() for e in self.vision_encoders
        ]
        self.validate()

    # ----------------------------------------------------------------- derived values
    @property
    def encoder_specs(self) -> list[EncoderSpec]:
        """Specs of the encoders the fusion uses (`none` uses only the first)."""
        specs = [EncoderSpec.from_dict(e) for e in self.vision_encoders]
        return specs[:1] if self.fusion == "none" else specs

    @property
    def mix_weights_resolved(self) -> list[float]:
        k = len(self.encoder_specs)
        if self.mix_weights is not None:
            return [float(w) for w in self.mix_weights]
        if k == 2:
            return [float(self.alpha), 1.0 - float(self.alpha)]
        return [1.0 / k] * k

    @property
    def patch_grid(self) -> tuple[int, int]:
        """The (rows, cols) grid of visual tokens per encoder after resampling."""
        return self.encoder_specs[0].grid

    @property
    def tokens_per_encoder(self) -> int:
        spec = self.encoder_specs[0]
        return spec.num_tokens

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens one image occupies in the LLM's input sequence."""
        k = len(self.encoder_specs)
        return self.tokens_per_encoder * (k if self.fusion == "interleaved" else 1)

    # ----------------------------------------------------------------- validation
    def validate(self) -> None:
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"MofConfig.fusion: expected one of {FUSION_MODES}, got {self.fusion!r}")
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"MofConfig.projector_type: expected one of {PROJECTOR_TYPES}, got {self.projector_type!r}")
        specs = self.encoder_specs
        k = len(specs)
        if self.fusion != "none" and k < 2:
            raise ValueError(f"MofConfig.fusion={self.fusion!r} mixes encoders: expected at least 2 vision_encoders, got {k}")
        if self.fusion != "none" and any(s.keep != "patch" for s in specs):
            raise ValueError("MofConfig.vision_encoders[].keep='all' keeps CLS/register tokens and only works with fusion='none'")
        if self.fusion == "additive":
            weights = self.mix_weights_resolved
            if len(weights) != k:
                raise ValueError(f"MofConfig.mix_weights: expected {k} weights (one per encoder), got {len(weights)}")
            if not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
                raise ValueError(f"MofConfig.mix_weights: expected weights summing to 1, got {weights} (sum {sum(weights)})")
            if not 0.0 <= self.alpha <= 1.0:
                raise ValueError(f"MofConfig.alpha: expected a value in [0, 1], got {self.alpha}")
            widths = [s.hidden_size for s in specs]
            if len(set(widths)) > 1 and not self.mix_after_projector:
                raise ValueError(
                    f"MofConfig.fusion='additive' sums features before one projector, but the encoders' widths differ "
                    f"({dict(zip([s.type for s in specs], widths))}); set mix_after_projector=true to mix after per-encoder projectors"
                )
        if k > 1 and not self.resample:
            grids = [s.grid for s in specs]
            if len(set(grids)) > 1:
                names = ", ".join(f"{s.type} {g[0]}x{g[1]} (image {s.image_size}px / patch {s.patch_size})" for s, g in zip(specs, grids))
                raise ValueError(
                    f"MofConfig: the encoders' patch grids differ ({names}); choose image sizes that give the same grid "
                    "or set resample=true to resize every grid to the first encoder's"
                )
        if self.image_token_id < 0:
            raise ValueError(f"MofConfig.image_token_id: expected a non-negative id, got {self.image_token_id}")

    def to_dict(self):
        output = super().to_dict()
        output["vision_encoders"] = copy.deepcopy(self.vision_encoders)
        return output
