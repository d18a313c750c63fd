"""Fusions behind the registry: exact arithmetic of each mode, Cambrian's aggregator, and the per-family tower
parity that catches prefix-token mistakes."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

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


# ----------------------------------------------------------------------------- the connector after Cambrian's aggregator
def sva_config(grid=4, **kw):
    config = tiny_config(fusion={"type": "sva_connector", "grid": grid, "layers": 2, "num_heads": 4, **kw})
    config.vision_encoders[1]["config"]["patch_size"] = 16  # DINOv2 4x4 against CLIP's 8x8: no resampling needed
    return MofConfig.from_dict(config.to_dict())


def test_sva_connector_shapes_and_token_count_from_config():
    config = sva_config()
    assert config.num_visual_tokens == 16
    model = MofForConditionalGeneration(config).eval()
    assert model.get_image_features(pixels(config)).shape == (2, 16, 128)
    with pytest.raises(ValueError, match="8 does not divide encoder dinov2's 4x4"):
        sva_config(grid=8)


def test_sva_connector_each_query_sees_only_its_own_window():
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


def test_sva_connector_trains_saves_and_loads(tmp_path):
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
    # saved before `sva` became Cambrian's whole SVA: type "sva" with the connector's options loads as the connector
    saved = json.loads((tmp_path / "sva" / "config.json").read_text())
    assert saved["fusion"]["type"] == "sva_connector"
    saved["fusion"]["type"] = "sva"
    (tmp_path / "sva" / "config.json").write_text(json.dumps(saved))
    old = MofForConditionalGeneration.from_pretrained(tmp_path / "sva").eval()
    assert old.config.fusion_type == "sva_connector"
    torch.testing.assert_close(old(input_ids=ids, pixel_values=px).logits, model(input_ids=ids, pixel_values=px).logits)


@pytest.mark.slow
def test_train_py_with_mof_sva(tmp_path, data_dir):
    run_script(["train.py", "mof=sva", *FAST, "trainer.max_steps=2", "evaluate_after=null",
                f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path}"])
    assert MofForConditionalGeneration.from_pretrained(tmp_path / "export").config.fusion["type"] == "sva"


# ----------------------------------------------------------------------------- Cambrian's SVA, whole
FIXTURES = Path(__file__).parent / "fixtures"


def test_sva_equals_cambrians_released_modules_on_shared_weights():
    """Against Cambrian's own `vision_sampler.py` modules composed as its `cambrian_arch.py` / `cambrian_llama.py`
    compose them (tests/fixtures/make_cambrian_sva_reference.py ran them outside this project on these weights):
    two encoders of different grids, two query groups (one resized), depth 2, newlines, and one aggregation layer
    inside the LLM on the visual tokens of a sequence."""
    from types import SimpleNamespace

    import numpy as np

    from mof.model.fusion.sva import SpatialVisionAggregator, SvaOptions

    ref = np.load(FIXTURES / "cambrian_sva_reference.npz")
    specs = [SimpleNamespace(grid=g, hidden_size=w, keep="patch", type=f"enc{i}")
             for i, (g, w) in enumerate([((8, 8), 24), ((4, 4), 16)])]
    options = SvaOptions(grid=4, query_groups=[4, 2], hidden_size=32, depth=2, num_heads=16, newline=True,
                         llm_layers=1, llm_start=0, llm_stride=1)
    fusion = SpatialVisionAggregator(specs, 40, options, "mlp2x_gelu").eval()
    fusion.load_state_dict({k[2:]: torch.from_numpy(ref[k]) for k in ref.files if k.startswith("w/")}, strict=True)
    with torch.no_grad():
        tokens = fusion([torch.from_numpy(ref["features0"]), torch.from_numpy(ref["features1"])])
        assert tokens.shape == (2, 20, 40)
        assert (tokens - torch.from_numpy(ref["image_tokens"])).abs().max() < 1e-5
        mask = torch.zeros(2, 27, dtype=torch.bool)
        mask[:, 3:23] = True     # the 4 x 5 visual tokens, from position 3
        fusion.place(mask)
        after = fusion._after_layer(0, None, (), torch.from_numpy(ref["hidden"]))
        assert (after - torch.from_numpy(ref["hidden_after"])).abs().max() < 1e-5
        assert not torch.equal(after, torch.from_numpy(ref["hidden"]))


def sva_llm_config(model_type="llama", layers=4, **kw):
    fusion = {"type": "sva", "grid": 4, "hidden_size": 32, "num_heads": 16, "llm_layers": 2, "llm_start": 1,
              "llm_stride": 2, **kw}
    config = tiny_config(fusion=fusion)
    text = config.text_config.to_dict()
    text.update(model_type=model_type, num_hidden_layers=layers)
    return MofConfig.from_dict({**config.to_dict(), "text_config": text})


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_sva_aggregates_the_visual_tokens_after_the_decoder_layers_it_names(model_type):
    """After decoder layers 1 and 3 of 4 (llm_start 1, llm_stride 2) and no others, the hidden states of the visual
    tokens, newlines left out, become the aggregation layer's output on them; every other position is untouched.
    The positions are written out by hand: image a at 2 in row 0, at 0 in row 1, 4 x 5 tokens each."""
    torch.manual_seed(0)
    config = sva_llm_config(model_type)
    model = MofForConditionalGeneration(config).eval()
    fusion, layers = model.fusion, model.language_model.layers
    n = config.num_visual_tokens
    assert n == 20
    ids = torch.tensor([[7, 8, *[3] * n, 9, 10], [*[3] * n, 11, 12, 13, 14]])
    raw, inputs = {}, {}
    for i, layer in enumerate(layers):   # each layer's own output (before sva's hook) and each layer's input
        layer.register_forward_hook(lambda m, a, o, i=i: raw.__setitem__(i, o[0] if isinstance(o, tuple) else o),
                                    prepend=True)
        layer.register_forward_pre_hook(lambda m, a, kw, i=i: inputs.__setitem__(i, (a[0] if a else kw["hidden_states"])),
                                        with_kwargs=True)
    model.language_model.norm.register_forward_pre_hook(lambda m, a: inputs.__setitem__(len(layers), a[0]))
    with torch.no_grad():
        model(input_ids=ids, pixel_values=pixels(config))
    starts = [2, 0]
    queries = [(b, s + r * 5 + c) for b, s in zip((0, 1), starts) for r in range(4) for c in range(4)]
    cells, context = fusion._vision
    for i in range(4):
        before, after = raw[i], inputs[i + 1]
        if i not in (1, 3):
            assert torch.equal(before, after), i
            continue
        k = (i - 1) // 2
        expected = before.clone()
        with torch.no_grad():
            q = torch.stack([before[b, t] for b, t in queries]).unsqueeze(1)
            new = fusion.llm_samplers[k](q, context, cells).squeeze(1)
        for row, (b, t) in enumerate(queries):
            expected[b, t] = new[row]
        torch.testing.assert_close(after, expected)
        changed = {(b, t) for b, t in zip(*torch.nonzero((after - before).abs().amax(-1) > 0, as_tuple=True))}
        assert {(int(b), int(t)) for b, t in changed} == set(queries), i


def test_sva_trains_under_gradient_checkpointing_as_without_it_and_decodes_with_a_cache():
    """The hooks run inside the checkpointed layers: the same loss and gradients. Generation's decoding steps have
    no images: the hooks leave them alone, and the cached greedy tokens equal a loop that recomputes everything."""
    torch.manual_seed(0)
    config = sva_llm_config(layers=2, llm_start=0, llm_stride=1)
    model = MofForConditionalGeneration(config)
    n = config.num_visual_tokens
    ids = torch.tensor([[7, *[3] * n, 9, 10, 11], [8, 8, *[3] * n, 12, 13]])
    px = pixels(config)
    grads, runs = [], []
    model.fusion.llm_samplers[0].register_forward_pre_hook(lambda *a: runs.append(1))   # (a recompute may stop early)
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        runs.clear()
        loss = model(input_ids=ids, pixel_values=px, labels=ids).loss
        loss.backward()
        assert len(runs) == 1 + checkpointing   # checkpointed: run again in the backward pass
        grads.append((loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}))
    (loss0, g0), (loss1, g1) = grads
    torch.testing.assert_close(loss0, loss1)
    assert g0.keys() == g1.keys() and any(k.startswith("model.fusion.llm_samplers") for k in g0)
    for k in g0:
        torch.testing.assert_close(g0[k], g1[k], msg=k)
    model.activation_checkpointing_disable()
    model.eval()
    prompt = ids[:1, :n + 2]
    with torch.no_grad():
        cached = model.generate(input_ids=prompt, pixel_values=[p[:1] for p in px], max_new_tokens=4, do_sample=False,
                                pad_token_id=0)[0, prompt.shape[1]:]
        seq = prompt
        for _ in range(4):
            logits = model(input_ids=seq, pixel_values=[p[:1] for p in px]).logits
            seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)
    assert cached.tolist() == seq[0, prompt.shape[1]:].tolist()


def test_sva_checks_its_layers_against_the_llm():
    with pytest.raises(ValueError, match=r"follow decoder layers 1..5 .* the LLM has 4"):
        MofForConditionalGeneration(sva_llm_config(llm_layers=3))
    with pytest.raises(ValueError, match="side 3 does not divide encoder clip's 8x8"):
        sva_llm_config(query_groups=[4, 3])
    assert sva_llm_config(newline=False, llm_layers=0).num_visual_tokens == 16


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
