"""Model presets: the tiny CPU default and the paper's configurations (architectures only, no weights)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .configuration_mof import MofConfig

# Architectures of the paper's checkpoints, so that a paper-size model can be built (random
# weights, for planning and benchmarks) and its token counts checked without any download.
CLIP_VIT_L14_336 = {
    "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
    "num_attention_heads": 16, "patch_size": 14, "image_size": 336, "hidden_act": "quick_gelu", "projection_dim": 768,
}
DINOV2_LARGE = {
    "model_type": "dinov2", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
    "mlp_ratio": 4, "patch_size": 14, "image_size": 518, "layerscale_value": 1.0,
}
VICUNA_7B = {
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
}
VICUNA_13B = dict(VICUNA_7B, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                  num_key_value_heads=40)
LLMS = {"lmsys/vicuna-7b-v1.5": VICUNA_7B, "lmsys/vicuna-13b-v1.5": VICUNA_13B}


def paper_config(fusion: str | dict = "interleaved", llm: str = "lmsys/vicuna-7b-v1.5", image_size: int = 336,
                 dinov2_interpolation: str = "hf", **kwargs) -> MofConfig:
    """CLIP ViT-L/14-336 + DINOv2 ViT-L/14 + Vicuna v1.5, both encoders at `image_size`. `dinov2_interpolation`:
    `dinov2_hub` resizes DINOv2's position embeddings as the paper's code did (torch.hub), `hf` as transformers."""
    if llm not in LLMS:
        raise ConfigError(f"paper_config: unknown llm {llm!r}; known: {sorted(LLMS)}")
    encoders = [
        {"type": "clip", "config": CLIP_VIT_L14_336, "image_size": image_size, "pretrained": "openai/clip-vit-large-patch14-336"},
        {"type": "dinov2", "config": DINOV2_LARGE, "image_size": image_size, "pretrained": "facebook/dinov2-large",
         "position_interpolation": dinov2_interpolation},
    ]
    return MofConfig(vision_encoders=encoders, text_config=dict(LLMS[llm]), text_pretrained=llm, fusion=fusion,
                     image_token_id=32000, **kwargs)


# The tiny towers (64 px, 8x8 patches): the shapes `mof.pretraining` trains and `mof/assets/encoders/` ships.
TINY_VIT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
            "patch_size": 8, "image_size": 64}
TINY_PROJECTION_DIM = 64
# The tiny CLIP and DINO that `python pretrain.py encoder=clip|dino` trains, shipped with the package.
TINY_ENCODERS = {kind: str(Path(__file__).resolve().parent.parent / "assets" / "encoders" / f"tiny-{kind}")
                 for kind in ("clip", "dino")}


def tiny_encoder(kind: str, ref: str = "tiny") -> str:
    """`tiny`: the shipped tiny `kind` (clip or dino); anything else (a `save_pretrained` folder, a hub id) as is."""
    return TINY_ENCODERS[kind] if str(ref) == "tiny" else str(ref)


def tiny_config(fusion: str = "interleaved", vocab_size: int = 1024, image_token_id: int = 3, image_size: int = 64,
                patch_size: int = 8, pretrained_encoders: bool = False, encoders: dict | None = None,
                **kwargs) -> MofConfig:
    """A model that trains in minutes on two CPU cores: two 3-layer ViTs and a 2-layer Llama. `pretrained_encoders`:
    the towers name the tiny CLIP and DINO in `encoders` (`{"clip": ref, "dino": ref}`; `tiny`, the default, is
    the shipped one, `TINY_ENCODERS`; a folder from `pretrain.py` of the same shape is another), loaded by
    `load_pretrained_components`."""
    vit = dict(TINY_VIT, patch_size=patch_size, image_size=image_size)
    towers = [
        {"type": "clip", "config": dict(vit, model_type="clip_vision_model", projection_dim=TINY_PROJECTION_DIM)},
        {"type": "dinov2", "config": dict(vit, model_type="dinov2", mlp_ratio=TINY_VIT["intermediate_size"] // TINY_VIT["hidden_size"])},
    ]
    if pretrained_encoders:
        for encoder, kind in zip(towers, ("clip", "dino")):
            encoder["pretrained"] = tiny_encoder(kind, (encoders or {}).get(kind, "tiny"))
    text = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": vocab_size,
            "max_position_embeddings": 1024, "tie_word_embeddings": False}
    return MofConfig(vision_encoders=towers, text_config=text, fusion=fusion, image_token_id=image_token_id, **kwargs)
