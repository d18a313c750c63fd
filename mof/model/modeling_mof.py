"""`MofModel` (encoders, fusion, the LLM's decoder: hidden states) and `MofForConditionalGeneration` (adds the
LM head and the loss), split as transformers' `LlavaModel` / `LlavaForConditionalGeneration` are."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_mof import MofConfig
from .llava_interop import from_llava
from .loss import causal_lm_loss
from .vision_encoders import VisionEncoder
from .weights import refused_pickles, require_available


class MofPreTrainedModel(PreTrainedModel):
    config_class = MofConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["VisionEncoder"]


class MofModel(MofPreTrainedModel):
    """Images and text in, the decoder's last hidden states out."""

    def __init__(self, config: MofConfig):
        super().__init__(config)
        specs = config.encoder_specs
        self.vision_encoders = nn.ModuleList(VisionEncoder(spec) for spec in specs)
        self.fusion = config.fusion_class(specs, config.text_config.hidden_size, config.fusion_options, config.projector_type)
        self.language_model = AutoModel.from_config(config.text_config)
        self.fusion.attach(self.language_model)   # a fusion that works inside the LLM too (sva) hooks its layers
        if config.freeze_vision:
            self.vision_encoders.requires_grad_(False)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def _pixels_per_encoder(self, pixel_values) -> list[torch.Tensor]:
        k = len(self.vision_encoders)
        if isinstance(pixel_values, torch.Tensor):
            return [pixel_values] * k  # the same pixels for every encoder (the paper's released code)
        pixel_values = list(pixel_values)
        # Pixels for every configured encoder are accepted too: `none` uses the first only.
        if len(pixel_values) not in (k, len(self.config.vision_encoders)):
            raise ValueError(f"pixel_values: expected one tensor per encoder ({k}), got {len(pixel_values)}")
        return pixel_values[:k]

    def get_image_features(self, pixel_values: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """`[images, num_visual_tokens, llm_width]` for a batch of images."""
        features = [enc(px) for enc, px in zip(self.vision_encoders, self._pixels_per_encoder(pixel_values))]
        return self.fusion(features)

    def _vision_anchor(self, reference: torch.Tensor) -> torch.Tensor:
        """A zero that depends on every trainable projector and encoder weight, so that a batch without
        images still gives them a (zero) gradient and data-parallel ranks stay in step."""
        params = [p for m in (self.fusion, self.vision_encoders) for p in m.parameters() if p.requires_grad]
        return sum((p.sum() for p in params), reference.new_zeros(())) * 0.0

    def scatter_visual_tokens(self, inputs_embeds, image_mask, image_features):
        n_tokens = int(image_mask.sum())
        n_images, per_image = image_features.shape[:2]
        if n_tokens != n_images * per_image:
            raise ValueError(
                f"Image features and image tokens do not match: input_ids hold {n_tokens} image tokens, "
                f"the images give {n_images} x {per_image} = {n_images * per_image} visual tokens"
            )
        mask = image_mask.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, image_features.to(inputs_embeds.dtype))

    def embed(self, input_ids, pixel_values=None, prefill: bool = True) -> torch.Tensor:
        """Text embeddings with each image's visual tokens in its placeholder span (images in row-major order)."""
        image_mask = input_ids == self.config.image_token_id
        # The placeholder id may lie outside the LLM's vocabulary: look up a valid id instead.
        inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
        if pixel_values is not None and self._pixels_per_encoder(pixel_values)[0].shape[0] > 0:
            features = self.get_image_features(pixel_values)
            self.fusion.place(image_mask)
            return self.scatter_visual_tokens(inputs_embeds, image_mask, features)
        self.fusion.place(None)
        if image_mask.any() and prefill:
            raise ValueError(f"input_ids hold {int(image_mask.sum())} image tokens but no pixel_values were given")
        if self.training:
            inputs_embeds = inputs_embeds + self._vision_anchor(inputs_embeds)
        return inputs_embeds

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | Sequence[torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values, prefill=_is_prefill(kwargs))
        else:
            self.fusion.place(None)   # embeddings made elsewhere: no images this model placed
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   position_ids=position_ids, **kwargs)


class MofForConditionalGeneration(MofPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: MofConfig):
        super().__init__(config)
        self.model = MofModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    # ------------------------------------------------------------------ HF plumbing
    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    @property
    def vision_encoders(self) -> nn.ModuleList:
        return self.model.vision_encoders

    @property
    def fusion(self) -> nn.Module:
        return self.model.fusion

    @property
    def language_model(self) -> nn.Module:
        """The LLM's decoder (its LM head is `self.lm_head`)."""
        return self.model.language_model

    @property
    def num_visual_tokens(self) -> int:
        return self.config.num_visual_tokens

    def get_image_features(self, pixel_values):
        return self.model.get_image_features(pixel_values)

    # ------------------------------------------------------------------ weights
    def load_pretrained_components(self, dtype: torch.dtype | None = None, encoders=None, llm: bool = True):
        """Load the encoders (all, or the indices in `encoders`) and the LLM that name `pretrained`
        weights (a hub id or a local directory).

        Building from a config never downloads; this is the one step that reads pretrained weights.
        Projectors keep their current (new or previously trained) weights.
        """
        specs = self.config.encoder_specs
        indices = [i for i in (range(len(specs)) if encoders is None else encoders) if specs[i].pretrained]
        refs = [specs[i].pretrained for i in indices] + ([self.config.text_pretrained] if llm and self.config.text_pretrained else [])
        for ref in refs:
            require_available(ref)  # every check before the first (slow) load
        kwargs = {"dtype": dtype} if dtype is not None else {}
        for i in indices:
            frozen = self.vision_encoders[i].is_frozen
            self.model.vision_encoders[i] = VisionEncoder.from_pretrained(specs[i], **kwargs).set_trainable(not frozen)
        if llm and self.config.text_pretrained:
            with refused_pickles(self.config.text_pretrained):
                causal_lm = AutoModelForCausalLM.from_pretrained(self.config.text_pretrained, **kwargs)
            self.model.language_model = causal_lm.get_decoder()
            self.lm_head = causal_lm.get_output_embeddings()
            self.config.text_config = causal_lm.config
        return self

    @classmethod
    def from_llava(cls, llava, extra_encoders: list[dict] | None = None, fusion: str = "none", **kwargs):
        """Import a `LlavaForConditionalGeneration` (object, hub id or directory) as a CLIP-only MoF
        model; with `extra_encoders` and a fusion (e.g. a DINOv2 encoder and `interleaved`), LLaVA's
        CLIP projector is kept and the new encoders' projectors start fresh."""
        return from_llava(cls, llava, extra_encoders, fusion, **kwargs)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | Sequence[torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """With `labels` and `config.loss_implementation` other than `full`, the loss is computed chunk by chunk
        (or by Liger's fused kernel) without the full logits, and `logits` is None."""
        kwargs.pop("num_items_in_batch", None)
        if labels is not None:  # training: no cache, which also lets packed position_ids delimit the samples
            kwargs.setdefault("use_cache", False)
        check_packing(attention_mask, position_ids, kwargs)
        outputs = self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                             position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs)
        hidden = outputs.last_hidden_state
        implementation = self.config.loss_implementation
        if labels is not None and implementation != "full":
            loss, logits = causal_lm_loss(hidden, self.lm_head.weight, labels, implementation,
                                          self.config.loss_chunk_size), None
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden[:, keep, :])
            loss = causal_lm_loss(logits, None, labels, "full") if labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache,
                                      hidden_states=outputs.hidden_states, attentions=outputs.attentions)



def check_packing(attention_mask, position_ids, kwargs) -> None:
    """Packed rows (several samples in a row, position ids restarting at each) are delimited by their position ids
    alone: transformers builds the block-diagonal causal mask from them (SDPA, eager, flex) or the varlen
    boundaries (flash attention), but only with no attention mask and no cache. Given either, samples would attend
    across their boundaries without a word: refused."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[1] < 2:
        return
    if attention_mask is None and not kwargs.get("use_cache") and kwargs.get("past_key_values") is None:
        return  # packed or not, the positions decide
    steps = position_ids[:, 1:] != position_ids[:, :-1] + 1
    if attention_mask is not None and attention_mask.dim() == 2:  # a restart next to padding is not a sample boundary
        steps &= attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    if bool(steps.any()):
        raise ValueError("packed rows (position_ids restart inside a row) need attention_mask=None and no cache: "
                         "with either, the samples of a row would attend to each other")


def _is_prefill(kwargs) -> bool:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return cache is None or cache.get_seq_length() == 0
