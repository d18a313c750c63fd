import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, CLIPVisionModel, Dinov2Model

import mof  # noqa: F401  (registers the Auto classes)
from mof import MofConfig, MofForConditionalGeneration, paper_config, tiny_config
from mof.model.fusion.interleaved import InterleavedFusion, InterleavedOptions
from mof.model.vision_encoders import EncoderSpec, VisionEncoder
from mof.model.weights import WeightsNotFoundError

IMG = 3  # image token id of the tiny preset


def batch(config, n_images=2, text=(10, 11, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = config.num_visual_tokens
    ids = torch.tensor([[1, *([IMG] * n), *text] for _ in range(n_images)])
    pixels = [torch.randn(n_images, 3, s.image_size, s.image_size, generator=g) for s in config.encoder_specs]
    return ids, pixels


def make(fusion="interleaved", seed=0, **kw):
    torch.manual_seed(seed)
    return MofForConditionalGeneration(tiny_config(fusion=fusion, **kw)).eval()


@pytest.mark.parametrize("fusion,tokens", [("none", 64), ("additive", 64), ("interleaved", 128), ("concat", 64)])
def test_token_counts_and_shapes(fusion, tokens):
    model = make(fusion)
    assert model.num_visual_tokens == tokens
    ids, pixels = batch(model.config)
    out = model(input_ids=ids, pixel_values=pixels)
    assert out.logits.shape == (2, 1 + tokens + 3, model.config.text_config.vocab_size)
    assert model.get_image_features(pixels).shape == (2, tokens, 128)


@pytest.mark.parametrize("fusion,size,tokens", [
    ("none", 336, 576), ("additive", 336, 576), ("concat", 336, 576), ("interleaved", 336, 1152),
    ("none", 224, 256), ("interleaved", 224, 512),
])
def test_paper_token_counts_from_config_alone(fusion, size, tokens):
    config = paper_config(fusion=fusion, image_size=size)
    assert config.num_visual_tokens == tokens
    assert [s.grid for s in config.encoder_specs][0] == (size // 14, size // 14)
    assert config.encoder_specs[0].num_layers_used == 23  # CLIP: second-to-last of 24 layers
    assert config.text_pretrained == "lmsys/vicuna-7b-v1.5"


def test_interleave_order_is_patch_by_patch():
    fusion = InterleavedFusion(tiny_config().encoder_specs, 64, InterleavedOptions(), "linear")
    fusion.projectors = nn.ModuleList([nn.Identity(), nn.Identity()])
    clip = torch.arange(6.0).view(1, 3, 2)  # tokens c0 c1 c2
    dino = 100 + torch.arange(6.0).view(1, 3, 2)
    out = fusion([clip, dino])
    expected = torch.stack([clip[0, 0], dino[0, 0], clip[0, 1], dino[0, 1], clip[0, 2], dino[0, 2]])
    torch.testing.assert_close(out[0], expected, rtol=0, atol=0)


def _transplant(src, dst):
    """Copy src's encoder `i` into dst's only encoder, plus projector and LLM."""
    missing = dst.load_state_dict(src.state_dict(), strict=False).missing_keys
    assert missing == []


def test_additive_alpha_one_equals_clip_only():
    additive = make("additive", alpha=1.0)
    baseline = make("none", seed=1)
    _transplant(additive, baseline)
    ids, pixels = batch(additive.config)
    torch.testing.assert_close(additive(input_ids=ids, pixel_values=pixels).logits,
                               baseline(input_ids=ids, pixel_values=pixels).logits)


def test_additive_alpha_zero_equals_dino_only():
    additive = make("additive", alpha=0.0)
    config = tiny_config(fusion="none")
    config.vision_encoders = config.vision_encoders[::-1]  # DINOv2 first
    dino_only = MofForConditionalGeneration(config).eval()
    state = additive.state_dict()
    state = {k.replace("vision_encoders.1.", "vision_encoders.0."): v for k, v in state.items()
             if not k.startswith("vision_encoders.0.")}
    assert dino_only.load_state_dict(state, strict=False).missing_keys == []
    ids, pixels = batch(additive.config)
    torch.testing.assert_close(additive(input_ids=ids, pixel_values=pixels).logits,
                               dino_only(input_ids=ids, pixel_values=pixels[::-1]).logits)


def test_additive_after_projector_mixes_unequal_widths():
    config = tiny_config(fusion="additive")
    config.vision_encoders[1]["config"]["hidden_size"] = 96
    with pytest.raises(ValueError, match="widths differ"):
        config.validate()
    config.fusion["after_projector"] = True
    model = MofForConditionalGeneration(config)
    assert len(model.fusion.projectors) == 2
    ids, pixels = batch(config)
    assert model(input_ids=ids, pixel_values=pixels).logits.isfinite().all()


@pytest.mark.parametrize("fusion", ["none", "additive", "interleaved", "concat"])
def test_gradients_reach_projectors_not_frozen_encoders(fusion):
    model = make(fusion).train()
    ids, pixels = batch(model.config)
    model(input_ids=ids, pixel_values=pixels, labels=ids).loss.backward()
    for name, p in model.fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for p in model.vision_encoders.parameters():
        assert not p.requires_grad and p.grad is None
    assert not model.vision_encoders[0].tower.training  # frozen towers stay in eval mode


def test_unfrozen_encoder_gets_gradients_on_every_trainable_parameter():
    model = make("interleaved").train()
    for enc in model.vision_encoders:
        enc.set_trainable(True)
    assert not model.vision_encoders[1].tower.embeddings.mask_token.requires_grad  # DINOv2's is for masked inputs
    ids, pixels = batch(model.config)
    model(input_ids=ids, pixel_values=pixels, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.zero_grad()
    text_only = torch.tensor([[1, 20, 21, 22]])
    model(input_ids=text_only, labels=text_only).loss.backward()  # no image: still a (zero) gradient everywhere
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_text_only_and_mixed_batches():
    model = make("interleaved").train()
    n = model.num_visual_tokens
    text_only = torch.tensor([[1, 20, 21, 22], [1, 23, 24, 25]])
    out = model(input_ids=text_only, labels=text_only)
    out.loss.backward()
    assert all(p.grad is not None for p in model.fusion.parameters())  # zero-anchored, no unused params
    mixed = torch.tensor([[1, *([IMG] * n), 10, 11], [1, 12, 13, 14, *([0] * (n - 1))]])
    pixels = [torch.randn(1, 3, 64, 64)] * 2  # only the first sample has an image
    assert model(input_ids=mixed, pixel_values=pixels, labels=mixed).loss.isfinite()


def test_token_feature_mismatch_names_both_counts():
    model = make("interleaved")
    ids, pixels = batch(model.config)
    ids[0, 1] = 7  # one image token of the first sample replaced by text
    with pytest.raises(ValueError, match=r"hold 255 image tokens.*2 x 128 = 256"):
        model(input_ids=ids, pixel_values=pixels)


def test_save_load_round_trip_exact(tmp_path):
    model = make("interleaved")
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path / "m").model_type == "mof"
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "m").eval()
    assert isinstance(loaded, MofForConditionalGeneration)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    ids, pixels = batch(model.config)
    torch.testing.assert_close(model(input_ids=ids, pixel_values=pixels).logits,
                               loaded(input_ids=ids, pixel_values=pixels).logits, rtol=0, atol=0)


def test_generate_with_and_without_cache_agree():
    model = make("interleaved")
    ids, pixels = batch(model.config, n_images=1)
    kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, max_new_tokens=8,
              do_sample=False, pad_token_id=0)
    cached = model.generate(**kw, use_cache=True)
    uncached = model.generate(**kw, use_cache=False)
    assert cached.shape[1] == ids.shape[1] + 8
    assert torch.equal(cached, uncached)


def test_llava_parity(tiny_llava):
    llava, path = tiny_llava
    mof_model = MofForConditionalGeneration.from_llava(path).eval()
    assert mof_model.vision_encoders[0].spec.num_layers_used == 2  # feature layer -2 of 3: top layer not built
    ids = torch.tensor([[1, *([550] * 16), 5, 6, 7], [1, *([550] * 16), 8, 9, 10]])
    pixels = torch.randn(2, 3, 32, 32)
    expected = llava(input_ids=ids, pixel_values=pixels).logits
    got = mof_model(input_ids=ids, pixel_values=pixels).logits
    err = (expected - got).abs().max().item()
    assert err <= 1e-5, err


def test_llava_plus_dino_keeps_clip_projector(tiny_llava):
    llava, path = tiny_llava
    dino = {"type": "dinov2", "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                                         "patch_size": 8, "image_size": 32}}
    model = MofForConditionalGeneration.from_llava(llava, extra_encoders=[dino], fusion="interleaved")
    assert model.num_visual_tokens == 32
    torch.testing.assert_close(model.fusion.projectors[0][0].weight, llava.model.multi_modal_projector.linear_1.weight)
    assert model.fusion.projectors[1][0].weight.shape == (48, 32)


def test_encoder_features_equal_hf_hidden_states():
    torch.manual_seed(0)
    clip_spec = EncoderSpec(type="clip", config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
                                                 "num_attention_heads": 4, "image_size": 32, "patch_size": 8})
    dino_spec = EncoderSpec(type="dinov2", config={"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
                                                   "patch_size": 8, "image_size": 64}, image_size=32)
    px = torch.randn(2, 3, 32, 32)
    for spec, full_cls in [(clip_spec, CLIPVisionModel), (dino_spec, Dinov2Model)]:
        full = full_cls(spec.hf_config).eval()
        enc = VisionEncoder(spec).eval()
        enc.tower.load_state_dict(full.state_dict(), strict=False)
        ref = full(pixel_values=px, output_hidden_states=True).hidden_states[spec.feature_layer][:, 1:]
        torch.testing.assert_close(enc(px), ref)
        assert enc(px).shape == (2, 16, 32)


@pytest.mark.parametrize("kind,config,tokens", [
    ("siglip", {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "image_size": 32, "patch_size": 8}, 16),
    ("dinov2_reg", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "patch_size": 8,
                    "image_size": 32, "num_register_tokens": 4}, 16),
])
def test_other_encoder_families_drop_prefix_tokens(kind, config, tokens):
    spec = EncoderSpec(type=kind, config=config)
    enc = VisionEncoder(spec)
    assert enc(torch.randn(1, 3, 32, 32)).shape == (1, tokens, 32)


def test_resample_aligns_different_patch_sizes():
    config = tiny_config(fusion="interleaved")
    config.vision_encoders[1]["config"]["patch_size"] = 16  # 4x4 grid against CLIP's 8x8
    with pytest.raises(ValueError, match=r"clip 8x8.*dinov2 4x4"):
        config.validate()
    config.fusion["resample"] = True
    config.validate()
    model = MofForConditionalGeneration(config)
    ids, pixels = batch(config)
    assert model.get_image_features(pixels).shape == (2, 128, 128)


@pytest.mark.parametrize("change,message", [
    ({"fusion": "sum"}, "unknown fusion type 'sum'; known: none, additive, interleaved, concat, sva, sva_connector"),
    ({"fusion": {"type": "interleaved", "alpha": 0.5}}, r"no option\(s\) \['alpha'\]; its options are \['resample'\]"),
    ({"projector_type": "mlp3x"}, "unknown projector 'mlp3x'; known: linear, mlp2x_gelu, fused_gelu_mlp"),
    ({"alpha": 1.5, "fusion": "additive"}, "alpha"),  # the flat keys of configs saved before the fusion section
    ({"fusion": {"type": "additive", "alpha": 1.5}}, "fusion.alpha"),
    ({"fusion": {"type": "additive", "mix_weights": [0.5, 0.6]}}, "summing to 1"),
    ({"fusion": {"type": "sva", "grid": 3}}, "3 does not divide encoder clip's 8x8"),
    ({"fusion": {"type": "sva_connector", "grid": 3}}, "3 does not divide encoder clip's 8x8"),
])
def test_bad_configs_raise_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**change)


def test_unknown_encoder_lists_known_ones():
    with pytest.raises(ValueError, match="unknown type 'eva'; known: clip, dinov2, dinov2_reg, siglip"):
        MofConfig(vision_encoders=[{"type": "eva", "config": {}}])
    with pytest.raises(ValueError, match=r"unknown type 'dino_v2' \(did you mean 'dinov2'\?\)"):
        MofConfig(vision_encoders=[{"type": "dino_v2", "config": {}}])
    with pytest.raises(ValueError, match="at least 2 vision_encoders"):
        MofConfig(vision_encoders=tiny_config().vision_encoders[:1], fusion="interleaved")


def test_missing_pretrained_weights_fail_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tiny_config(fusion="none")
    config.text_pretrained = "no-such-org/no-such-llm"
    model = MofForConditionalGeneration(config)
    with pytest.raises(WeightsNotFoundError, match="no-such-org/no-such-llm.*HF_HUB_OFFLINE"):
        model.load_pretrained_components()
    config.text_pretrained = str(tmp_path / "missing")
    with pytest.raises(WeightsNotFoundError, match="no directory"):
        model.load_pretrained_components()


def test_load_pretrained_components_from_local_dirs(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(fusion="interleaved")
    donor = AutoModelForCausalLM.from_config(config.text_config)
    spec = config.encoder_specs[1]
    full_dino = Dinov2Model(spec.hf_config)
    full_dino.save_pretrained(tmp_path / "dino")
    donor.save_pretrained(tmp_path / "llm")
    config.vision_encoders[1]["pretrained"] = str(tmp_path / "dino")
    config.text_pretrained = str(tmp_path / "llm")
    model = MofForConditionalGeneration(config).load_pretrained_components()
    torch.testing.assert_close(model.vision_encoders[1].tower.embeddings.patch_embeddings.projection.weight,
                               full_dino.embeddings.patch_embeddings.projection.weight)
    torch.testing.assert_close(model.lm_head.weight, donor.lm_head.weight)
    torch.testing.assert_close(model.language_model.layers[1].mlp.up_proj.weight, donor.model.layers[1].mlp.up_proj.weight)
    assert not any(p.requires_grad for p in model.vision_encoders.parameters())
