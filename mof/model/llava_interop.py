"""Import a transformers `LlavaForConditionalGeneration` (llava-hf layout) as a MoF model."""

from __future__ import annotations

import torch
from transformers import LlavaForConditionalGeneration

from ..errors import ConfigError
from .configuration_mof import MofConfig
from .weights import refused_pickles, require_available

# llava-hf key prefix -> MoF key prefix
_KEY_MAP = (
    ("model.vision_tower.", "model.vision_encoders.0.tower."),
    ("model.multi_modal_projector.linear_1.", "model.fusion.projectors.0.0."),
    ("model.multi_modal_projector.linear_2.", "model.fusion.projectors.0.2."),
    ("model.language_model.", "model.language_model."),
    ("lm_head.", "lm_head."),
)


def _rename(key: str) -> str | None:
    for old, new in _KEY_MAP:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def llava_to_mof_config(llava_config, extra_encoders: list[dict] | None = None, fusion: str | dict = "none",
                        **kwargs) -> MofConfig:
    if llava_config.vision_config.model_type != "clip_vision_model":
        raise ConfigError(f"from_llava: expected a CLIP vision tower, got {llava_config.vision_config.model_type!r}")
    if getattr(llava_config, "projector_hidden_act", "gelu") != "gelu":
        raise ConfigError(f"from_llava: expected projector_hidden_act='gelu', got {llava_config.projector_hidden_act!r}")
    if not isinstance(llava_config.vision_feature_layer, int):
        raise ConfigError("from_llava: several vision_feature_layer values are not supported")
    clip = {
        "type": "clip",
        "config": llava_config.vision_config.to_dict(),
        "feature_layer": llava_config.vision_feature_layer,
        "keep": "patch" if llava_config.vision_feature_select_strategy == "default" else "all",
    }
    config = MofConfig(
        vision_encoders=[clip, *(extra_encoders or [])],
        text_config=llava_config.text_config.to_dict(),
        fusion=fusion,
        projector_type="mlp2x_gelu",
        image_token_id=llava_config.image_token_id,
        **kwargs,
    )
    if not config.fusion_class.keeps_first_projector:
        raise ConfigError(f"from_llava: fusion {config.fusion_type!r} has no projector that reads CLIP's features alone, "
                         "so LLaVA's projector cannot be kept")
    return config


def from_llava(cls, llava, extra_encoders: list[dict] | None = None, fusion: str | dict = "none", **kwargs):
    """`llava` is a `LlavaForConditionalGeneration` or a path/hub id of one."""
    if isinstance(llava, str):
        require_available(llava)
        with refused_pickles(llava):
            llava = LlavaForConditionalGeneration.from_pretrained(llava, dtype=torch.float32)
    config = llava_to_mof_config(llava.config, extra_encoders, fusion, **kwargs)
    model = cls(config)
    state = {}
    for key, value in llava.state_dict().items():
        new = _rename(key)
        if new is None:
            raise ConfigError(f"from_llava: unexpected LLaVA weight {key!r}")
        state[new] = value
    result = model.load_state_dict(state, strict=False)
    # Missing: only what MoF adds (extra encoders, their projectors). Unexpected: only tower layers
    # above the feature layer and the tower's final norm, which MoF never computes.
    missing = [k for k in result.missing_keys if k.startswith(("model.vision_encoders.0.", "model.language_model.", "lm_head.", "model.fusion.projectors.0."))]
    if missing:
        raise ConfigError(f"from_llava: weights missing from the LLaVA checkpoint: {missing[:5]}")
    kept = model.vision_encoders[0].spec.num_layers_used
    for key in result.unexpected_keys:
        layer = key.split(".layers.")[1].split(".")[0] if ".layers." in key else None
        if not (key.startswith("model.vision_encoders.0.") and ((layer is not None and int(layer) >= kept) or "post_layernorm" in key)):
            raise ConfigError(f"from_llava: LLaVA weight {key!r} has no place in the MoF model")
    model.load_pretrained_components(encoders=range(1, len(model.vision_encoders)), llm=False)
    return model
