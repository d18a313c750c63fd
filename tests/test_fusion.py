"""Fusions behind the registry: exact arithmetic of each mode, Cambrian's aggregator, and the per-family tower
parity that catches prefix-token mistakes."""

import math
from dataclasses import dataclass

import pytest
import torch
from transformers import Dinov2WithRegistersModel, SiglipVisionModel

from helpers import FAST, run_script
from mof import MofConfig, MofForConditionalGeneration, tiny_config
from mof.evaluation.benchmarks.mmvp_vlm import statement_picks
from mof.model.fusion import FUSIONS, Fusion, FusionOptions
from mof.model.fusion.grids import resample_to_grid
from mof.model.projectors import build_projector
from mof.model.vision_encoders import EncoderSpec, VisionEncoder

torch.manual_seed(0)


def model_for(fusion, seed=0, **kw):
    torch.manual_seed(seed)
    return MofForConditionalGeneration(tiny_config(fusion=fusion, **kw)).eval()


def pixels(config, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, s.image_size, s.image_size, generator=g) for s in config.encoder_specs]


def encoder_features(model, px):
    return [enc(p) for enc, p in zip(model.vision_encoders, px)]


# ----------------------------------------------------------------------------- each fusion's arithmetic
def test_concat_joins_each_encoders_features_once():
    model = model_for("concat")
    px = pixels(model.config)
    clip, dino = encoder_features(model, px)
    expected = model.fusion.projectors[0](torch.cat([clip, dino], dim=-1))
    torch.testing.assert_close(model.get_image_features(px), expected, rtol=0, atol=0)
    assert not torch.allclose(clip, dino)  # so that joining CLIP to itself would differ


def test_additive_after_projector_uses_the_mix_weights():
    config = tiny_config(fusion={"type": "additive", "alpha": 0.3, "after_projector": True})
    config.vision_encoders[1]["config"]["hidden_size"] = 96
    model = MofForConditionalGeneration(config).eval()
    clip, dino = torch.randn(2, 64, 64), torch.randn(2, 64, 96)
    p0, p1 = model.fusion.projectors
    torch.testing.assert_close(model.fusion([clip, dino]), 0.3 * p0(clip) + 0.7 * p1(dino))


def test_additive_with_three_encoders_and_mix_weights():
    d = tiny_config(fusion="additive").to_dict()
    d["vision_encoders"].append(dict(d["vision_encoders"][1]))
    config = MofConfig.from_dict({**d, "fusion": {"type": "additive", "mix_weights": [0.2, 0.3, 0.5]}})
    model = MofForConditionalGeneration(config).eval()
    a, b, c = (torch.randn(2, 64, 64) for _ in range(3))
    torch.testing.assert_close(model.fusion([a, b, c]), model.fusion.projectors[0](0.2 * a + 0.3 * b + 0.5 * c))
    even = MofForConditionalGeneration(MofConfig.from_dict({**d, "fusion": {"type": "additive"}}))
    assert even.fusion.weights == [1 / 3] * 3
    with pytest.raises(ValueError, match="expected 3 weights"):
        MofConfig.from_dict({**config.to_dict(), "fusion": {"type": "additive", "mix_weights": [0.5, 0.5]}})


def test_grid_resampling_is_bilinear():
    grid = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).reshape(1, 4, 1)
    out = resample_to_grid(grid, (2, 2), (4, 4)).reshape(4, 4)
    u = torch.tensor([0.0, 0.25, 0.75, 1.0])  # half-pixel centres, edges clamped (align_corners=False)
    torch.testing.assert_close(out, 2 * u[:, None] + u[None, :])


def test_interleaved_resample_puts_each_encoder_on_the_first_grid():
    config = tiny_config(fusion={"type": "interleaved", "resample": True})
    config.vision_encoders[1]["config"]["patch_size"] = 16
    model = MofForConditionalGeneration(MofConfig.from_dict(config.to_dict())).eval()
    clip, dino = torch.randn(1, 64, 64), torch.randn(1, 16, 64)
    out = model.fusion([clip, dino])
    expected_dino = model.fusion.projectors[1](resample_to_grid(dino, (4, 4), (8, 8)))
    torch.testing.assert_close(out[:, 1::2], expected_dino)


# ----------------------------------------------------------------------------- the registry
def test_a_new_fusion_is_one_class_and_one_entry(monkeypatch):
    @dataclass
    class MeanOptions(FusionOptions):
        scale: float = 1.0

    class MeanFusion(Fusion):
        Options = MeanOptions

        def build_projectors(self, specs, llm_width, projector_type):
            return [build_projector(projector_type, specs[0].hidden_size, llm_width)]

        def forward(self, features):
            return self.projectors[0](self.options.scale * torch.stack(features).mean(0))

    monkeypatch.setitem(FUSIONS, "mean", MeanFusion)
    model = model_for({"type": "mean", "scale": 2.0})
    assert model.config.num_visual_tokens == 64 and model.config.fusion == {"type": "mean", "scale": 2.0}
    assert model.get_image_features(pixels(model.config)).shape == (2, 64, 128)


def test_legacy_flat_fusion_keys_still_load():
    legacy = tiny_config(fusion="additive").to_dict()
    legacy.update(fusion="additive", alpha=0.75, mix_after_projector=False, resample=False, mix_weights=None)
    assert MofConfig.from_dict(legacy).fusion["alpha"] == 0.75


# ----------------------------------------------------------------------------- Cambrian's aggregator
def sva_config(grid=4, **kw):
    config = tiny_config(fusion={"type": "sva", "grid": grid, "layers": 2, "num_heads": 4, **kw})
    config.vision_encoders[1]["config"]["patch_size"] = 16  # DINOv2 4x4 against CLIP's 8x8: no resampling needed
    return MofConfig.from_dict(config.to_dict())


def test_sva_shapes_and_token_count_from_config():
    config = sva_config()
    assert config.num_visual_tokens == 16
    model = MofForConditionalGeneration(config).eval()
    assert model.get_image_features(pixels(config)).shape == (2, 16, 128)
    with pytest.raises(ValueError, match="8 does not divide encoder dinov2's 4x4"):
        sva_config(grid=8)


def test_sva_each_query_sees_only_its_own_window():
    torch.manual_seed(0)
    model = MofForConditionalGeneration(sva_config()).eval()
    clip, dino = torch.randn(1, 64, 64), torch.randn(1, 16, 64)
    base = model.fusion([clip, dino])
    for encoder, (rows, cols) in ((0, (8, 8)), (1, (4, 4))):
        feats = [clip.clone(), dino.clone()]
        r = rows // 4
        window = [(1 * r + a) * cols + (2 * r + b) for a in range(r) for b in range(r)]  # query (1, 2)
        feats[encoder][0, window] += torch.randn(len(window), 64)
        changed = (model.fusion(feats) - base).abs().amax(-1)[0] > 1e-6
        assert changed.nonzero().flatten().tolist() == [1 * 4 + 2], encoder


def test_sva_trains_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    config = sva_config()
    model = MofForConditionalGeneration(config)
    px = pixels(config)
    n = config.num_visual_tokens
    ids = torch.tensor([[1, *[3] * n, 10, 11]] * 2)
    model(input_ids=ids, pixel_values=px, labels=ids).loss.backward()
    no_grad = [k for k, p in model.fusion.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert no_grad == []
    model.eval().save_pretrained(tmp_path / "sva")
    again = MofForConditionalGeneration.from_pretrained(tmp_path / "sva").eval()
    torch.testing.assert_close(again(input_ids=ids, pixel_values=px).logits, model(input_ids=ids, pixel_values=px).logits)


@pytest.mark.slow
def test_train_py_with_mof_sva(tmp_path, data_dir):
    run_script(["train.py", "mof=sva", *FAST, "trainer.max_steps=2", "evaluate_after=null",
                f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path}"])
    assert MofForConditionalGeneration.from_pretrained(tmp_path / "export").config.fusion["type"] == "sva"


def test_prismatic_fused_projector():
    proj = build_projector("fused_gelu_mlp", 64, 128)
    layers = [(type(m).__name__, getattr(m, "in_features", None), getattr(m, "out_features", None)) for m in proj]
    assert layers == [("Linear", 64, 256), ("GELU", None, None), ("Linear", 256, 128), ("GELU", None, None),
                      ("Linear", 128, 128)]
    model = model_for("concat", projector_type="fused_gelu_mlp")
    assert model.fusion.projectors[0][0].in_features == 128  # both encoders' widths
    assert model.get_image_features(pixels(model.config)).shape == (2, 64, 128)


# ----------------------------------------------------------------------------- towers against HF's own outputs
@pytest.mark.parametrize("kind,full_cls,config,prefix", [
    ("siglip", SiglipVisionModel, {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                                   "num_attention_heads": 4, "image_size": 32, "patch_size": 8}, 0),
    ("dinov2_reg", Dinov2WithRegistersModel, {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
                                              "patch_size": 8, "image_size": 32, "num_register_tokens": 4}, 5),
])
def test_truncated_towers_equal_hf_hidden_states(kind, full_cls, config, prefix):
    torch.manual_seed(0)
    spec = EncoderSpec(type=kind, config=config)
    full = full_cls(spec.hf_config).eval()
    enc = VisionEncoder(spec).eval()
    enc.tower.load_state_dict(full.state_dict(), strict=False)
    px = torch.randn(2, 3, 32, 32)
    ref = full(pixel_values=px, output_hidden_states=True).hidden_states[spec.feature_layer][:, prefix:]
    assert ref.shape == (2, 16, 32)
    torch.testing.assert_close(enc(px), ref)


def test_mmvp_vlm_each_statement_picks_an_image():
    # rows are statements, columns images: statement 0 -> image 0, statement 1 -> image 1 (a correct pair),
    # while each image's best statement is statement 1 (the wrong axis would call the pair wrong).
    def unit(degrees):
        return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]

    text = 3.0 * torch.tensor([unit(-50), unit(40)])  # not normalised: the cosine must be computed
    images = torch.tensor([unit(0), unit(60)])
    sim, picks = statement_picks(text, images)
    assert picks == [0, 1]
    assert sim.argmax(dim=0).tolist() == [1, 1]
