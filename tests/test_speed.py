"""The speed options change how fast, never what is computed: each one's loss and gradients against the plain model
on CPU where it runs there, and a one-line error where it needs a GPU or a package (mof/model/speed.py)."""

import pytest
import torch

from helpers import run_script
from mof import MofForConditionalGeneration, tiny_config
from mof.data.collate import Collator
from mof.model.factory import build_model
from mof.model.speed import SpeedOptionError, check_speed_options, checkpoint_layers
from mof.training.optim import build_optimizer
from test_packing_and_loss import loss_and_grads, samples


def tiny(**speed):
    config = tiny_config(fusion="interleaved", vocab_size=544)
    return build_model(config, seed=0, speed=speed).train().requires_grad_(True), config


def assert_same(a, b, rtol=1e-4, atol=1e-5):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert abs(loss_a - loss_b) <= 1e-5
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 20
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], rtol=rtol, atol=atol, msg=k)


def test_flex_attention_packed_equals_sdpa_padded():
    """FlexAttention over packed rows (the block-diagonal mask from the position ids) gives the padded batch's loss.
    On CPU only the forward pass runs: torch has no FlexAttention backward there (gradients: GPU, bench/gpu.py)."""
    sdpa, config = tiny()
    flex, _ = tiny(attention="flex_attention")
    assert flex.config.text_config._attn_implementation == "flex_attention"
    items = samples(config)
    padded = Collator(0)(items)
    packed = Collator(0, packing=True, pack_length=2 * config.num_visual_tokens + 60)(items)
    assert packed["input_ids"].shape[0] < 5
    with torch.no_grad():
        def loss(model, batch):
            return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                         position_ids=batch.get("position_ids"), pixel_values=batch.get("pixel_values"),
                         labels=batch["labels"]).loss.item()
        assert loss(flex, packed) == pytest.approx(loss(sdpa, padded), abs=1e-5)


def test_regional_compile_changes_nothing():
    plain, config = tiny()
    compiled, _ = tiny(compile_layers="aot_eager")   # inductor needs a compiler toolchain; the regions are the same
    layers = compiled.model.language_model.layers
    assert all(layer._compiled_call_impl is not None for layer in layers)
    batch = Collator(0)(samples(config))
    assert_same(loss_and_grads(plain, batch), loss_and_grads(compiled, batch))


def test_checkpointing_a_fraction_of_the_layers_recomputes_only_those():
    plain, config = tiny()
    half, _ = tiny()
    assert checkpoint_layers(half, 0.5) == 1          # 2 decoder layers: the first
    layers = half.model.language_model.layers
    assert [layer.gradient_checkpointing for layer in layers] == [True, False]
    calls = [0, 0]
    for k, layer in enumerate(layers):   # transformers checkpoints a layer's forward: its MLP runs again
        layer.mlp.register_forward_pre_hook(lambda m, a, k=k: calls.__setitem__(k, calls[k] + 1))
    batch = Collator(0)(samples(config))
    result = loss_and_grads(half, batch)
    assert calls == [2, 1]                               # by hand: the first layer ran again in the backward pass
    assert_same(loss_and_grads(plain, batch), result)
    full, _ = tiny()
    assert checkpoint_layers(full, True) == 2 and all(layer.gradient_checkpointing for layer in full.model.language_model.layers)


def test_fused_adamw_takes_the_same_step():
    batch = None
    after = []
    for fused in (False, True):
        model, config = tiny()
        batch = batch or Collator(0)(samples(config))
        optimizer, _ = build_optimizer(model, 10, lr=1e-3, fused=fused)
        assert optimizer.defaults["fused"] is (True if fused else None)
        for _ in range(2):
            loss_and_grads(model, batch)
            optimizer.step()
        after.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    for k in after[0]:
        torch.testing.assert_close(after[0][k], after[1][k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("options,error", [
    ({"attention": "flash"}, "speed.attention: expected one of sdpa, eager, flex_attention, flash_attention_2"),
    ({"attention": "flex_attention"}, "FlexAttention has no backward pass on CPU"),
    ({"liger_kernels": True}, "speed.liger_kernels=true needs a CUDA GPU and `pip install liger-kernel`"),
    ({"compile_layers": 3}, "speed.compile_layers: expected null or a torch.compile backend name"),
    ({"gradient_checkpointing": 1.5}, "model.gradient_checkpointing: expected true, false or the fraction"),
])
def test_options_this_machine_cannot_run_are_one_line_errors(options, error):
    with pytest.raises(SpeedOptionError, match=error.replace("(", r"\(").replace(")", r"\)").replace("`", ".")):
        check_speed_options(**options)


def test_flash_attention_needs_its_package():
    pytest.importorskip("torch")
    if __import__("importlib").util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(SpeedOptionError, match="needs the flash-attn package"):
        check_speed_options(attention="flash_attention_2")


def test_train_py_refuses_flex_training_on_cpu_in_one_line(tmp_path):
    proc = run_script(["train.py", "speed.attention=flex_attention", "trainer.accelerator=cpu",
                       f"hydra.run.dir={tmp_path}", "logger=csv"], check=False)
    assert proc.returncode == 2 and "FlexAttention has no backward pass on CPU" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_plain_model_is_unchanged_by_the_defaults():
    torch.manual_seed(0)
    config = tiny_config(fusion="interleaved", vocab_size=544)
    reference = MofForConditionalGeneration(config)
    built, _ = tiny()
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), built.state_dict().values()))
    assert built.config.text_config._attn_implementation == "sdpa"


def test_a_towers_shape_is_read_from_its_config_without_building_the_hf_config(monkeypatch):
    """The visual token count is asked once a training step (FLOPs) and once a question (evaluation): it reads the
    spec's dict, and builds the tower's HF config (milliseconds each time) only for a key the dict does not set."""
    import transformers

    from mof.model.vision_encoders import EncoderSpec

    cfg = tiny_config()
    specs = cfg.encoder_specs
    built = []
    real = transformers.AutoConfig.for_model
    monkeypatch.setattr(transformers.AutoConfig, "for_model", lambda *a, **k: built.append(a) or real(*a, **k))
    assert cfg.num_visual_tokens == 2 * 64 and specs[0].num_hidden_layers == 3 and specs[0].patch_size == 8
    assert built == []
    bare = EncoderSpec(type="clip", config={"model_type": "clip_vision_model", "image_size": 224})  # class defaults
    assert (bare.patch_size, bare.num_hidden_layers, bare.hidden_size) == (32, 12, 768) and built
