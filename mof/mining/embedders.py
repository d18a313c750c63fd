"""One image embedding per model family, as the paper takes it: CLIP's projected image embedding
(`get_image_features`), DINOv2's final CLS token (`pooler_output`); both L2-normalised. Which one a family uses is
its `image_embedding` in the model's encoder registry (`mof.model.vision_encoders.ENCODER_FAMILIES`), the one home
of what each family is."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import MofError
from ..model.vision_encoders import family_of_hub_model
from ..model.weights import refused_pickles, require_available


class EncoderError(MofError, ValueError):
    pass


def _projected(model, pixel_values):  # CLIP, SigLIP: the image tower's embedding in the joint space
    out = model.get_image_features(pixel_values=pixel_values)
    return getattr(out, "pooler_output", out)


def _cls(model, pixel_values):  # DINOv2 (with or without registers): the final layer-normed CLS token
    return model(pixel_values=pixel_values).pooler_output


EMBEDDINGS = {"projected": _projected, "cls": _cls}  # by EncoderFamily.image_embedding


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Embedder(torch.nn.Module):
    """A model from the hub or a local folder, its image processor, and its family's embedding rule."""

    def __init__(self, ref: str):
        super().__init__()
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        if not Path(ref).is_dir():
            require_available(ref)
        kind = AutoConfig.from_pretrained(ref).model_type
        try:
            family = family_of_hub_model(kind)
        except ValueError as e:
            raise EncoderError(f"{e} ({ref})") from None
        self.ref, self.kind, self.rule = ref, kind, EMBEDDINGS[family.image_embedding]
        with refused_pickles(ref):
            self.model = AutoModel.from_pretrained(ref).eval().requires_grad_(False)
        self.processor = AutoImageProcessor.from_pretrained(ref)

    def identity(self) -> dict:
        """What makes this encoder's embeddings what they are: its reference, a hash of its config, of every weight
        (name, dtype, shape and bytes: a copy elsewhere is the same encoder, a fine-tuned one is not) and of its
        image processor's settings."""
        weights = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            t = tensor.detach().cpu().contiguous().reshape(-1)
            weights.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            weights.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return {"ref": str(self.ref), "model_type": self.kind, "config": _sha(self.model.config.to_json_string()),
                "weights": weights.hexdigest(), "preprocessing": _sha(json.dumps(self.processor.to_dict(), sort_keys=True,
                                                                                  default=str))}

    def pixels(self, images) -> torch.Tensor:
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        return F.normalize(self.rule(self.model, pixel_values.to(dtype)).float(), dim=-1)
