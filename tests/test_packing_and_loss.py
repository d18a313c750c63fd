"""Sequence packing and the loss without full logits: the same loss and gradients as padding and the full
logits, the base model / head split, and weights saved before the split."""

import csv

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import train_cfg
from mof import MofForConditionalGeneration, MofModel, tiny_config
from mof.data.collate import Collator, pack_rows
from mof.checkpoints.layout import LIGHTNING_PREFIXES, migrate_legacy_keys
from mof.model.loss import causal_lm_loss
from mof.training.run import train

FUSIONS = ["none", "additive", "interleaved", "concat", {"type": "sva_connector", "grid": 4},
           {"type": "sva", "grid": 4, "hidden_size": 32, "llm_layers": 1, "llm_start": 1}]   # sva: inside the LLM too


def samples(config, spec=((30, True), (12, False), (50, True), (7, False), (25, True)), seed=1):
    """Token/label/pixel items as the dataset yields them: images and text-only, prompts unlabelled, except the
    second sample, labelled from its first token (plain language-model data)."""
    g = torch.Generator().manual_seed(seed)
    nv = config.num_visual_tokens
    items = []
    for k, (n, with_image) in enumerate(spec):
        ids = torch.randint(4, 500, (n,), generator=g)
        ids[0] = 1
        if with_image:
            ids = torch.cat([ids[:1], torch.full((nv,), config.image_token_id), ids[1:]])
        labels = ids.clone()
        if k != 1:
            labels[: len(ids) // 2] = -100
        labels[ids == config.image_token_id] = -100
        pixels = [torch.randn(3, 64, 64, generator=g) for _ in config.vision_encoders] if with_image else None
        items.append({"input_ids": ids, "labels": labels, "pixel_values": pixels})
    return items


def loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                 position_ids=batch.get("position_ids"), pixel_values=batch.get("pixel_values"),
                 labels=batch["labels"]).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("fusion", FUSIONS, ids=str)
def test_packed_loss_and_gradients_equal_padded(fusion, attn):
    torch.manual_seed(0)
    config = tiny_config(fusion=fusion, vocab_size=544)
    config.text_config._attn_implementation = attn
    model = MofForConditionalGeneration(config).train().requires_grad_(True)
    items = samples(config)
    padded = Collator(0)(items)
    packed = Collator(0, packing=True, pack_length=2 * config.num_visual_tokens + 60)(items)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0] == 5  # samples really share rows
    assert packed["num_tokens"] == padded["num_tokens"] and "attention_mask" not in packed
    loss_a, grads_a = loss_and_grads(model, padded)
    loss_b, grads_b = loss_and_grads(model, packed)
    assert abs(loss_a - loss_b) <= 1e-5
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 20
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_packed_rows_keep_each_sample_and_image_in_place():
    config = tiny_config(fusion="interleaved", vocab_size=544)
    items = samples(config)
    batch = Collator(0, packing=True, pack_length=2 * config.num_visual_tokens + 60)(items)
    positions = batch["position_ids"]
    starts = (positions == 0).nonzero().tolist()
    rows = pack_rows([len(x["input_ids"]) for x in items], 2 * config.num_visual_tokens + 60)
    order = [i for row in rows for i in row]
    # each sample sits where its row's position ids restart, whole, with its first label unused
    found = []
    for r, c in starts:
        for i in order:
            n = len(items[i]["input_ids"])
            if torch.equal(batch["input_ids"][r, c:c + n], items[i]["input_ids"]) and i not in found:
                assert torch.equal(positions[r, c:c + n], torch.arange(n))
                assert batch["labels"][r, c] == -100 and torch.equal(batch["labels"][r, c + 1:c + n], items[i]["labels"][1:])
                assert i != 1 or items[i]["labels"][0] != -100  # the one unused label that was set
                found.append(i)
                break
    assert sorted(found) == list(range(5))
    # images follow the order of their placeholder spans
    expected = [items[i]["pixel_values"][0] for i in order if items[i]["pixel_values"] is not None]
    assert torch.equal(batch["pixel_values"][0], torch.stack(expected))


def test_packed_rows_default_to_the_longest_sample():
    config = tiny_config(fusion="interleaved", vocab_size=544)
    items = samples(config)
    batch = Collator(0, packing=True)(items)
    longest = max(len(x["input_ids"]) for x in items)
    assert batch["input_ids"].shape == (3, longest)  # 178 | 158 + 12 + 7 | 153


def test_pack_rows_first_fit_decreasing():
    rows = pack_rows([5, 9, 3, 7, 2, 12], capacity=10)
    assert sorted(i for row in rows for i in row) == list(range(6))
    lengths = [5, 9, 3, 7, 2, 12]
    assert all(sum(lengths[i] for i in row) <= 10 or len(row) == 1 for row in rows)
    assert rows == [[5], [1], [3, 2], [0, 4]]


def test_chunked_loss_equals_full_loss_and_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(2, 300, 64, requires_grad=True)
    weight = torch.randn(1000, 64, requires_grad=True)
    labels = torch.randint(0, 1000, (2, 300))
    labels[:, :40] = -100
    full = causal_lm_loss(hidden @ weight.T, None, labels)
    g_full = torch.autograd.grad(full, (hidden, weight))
    for chunk in (1, 128, 5000):  # one row, a chunk that does not divide, everything at once
        chunked = causal_lm_loss(hidden, weight, labels, "chunked", chunk)
        g = torch.autograd.grad(chunked, (hidden, weight))
        torch.testing.assert_close(full, chunked)  # fp32 tolerance (a sum of 520 terms of ~26)
        for a, b in zip(g_full, g):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    frozen = weight.detach()  # a frozen head (LoRA): gradients for the hidden states only
    (g_hidden,) = torch.autograd.grad(causal_lm_loss(hidden, frozen, labels, "chunked", 64), (hidden,))
    torch.testing.assert_close(g_hidden, g_full[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fusion", ["none", "interleaved"])
def test_model_chunked_loss_matches_full_and_skips_logits(fusion):
    torch.manual_seed(0)
    model = MofForConditionalGeneration(tiny_config(fusion=fusion, vocab_size=544)).train().requires_grad_(True)
    batch = Collator(0, packing=True, pack_length=400)(samples(model.config))
    loss_full, grads_full = loss_and_grads(model, batch)
    model.config.loss_implementation, model.config.loss_chunk_size = "chunked", 37
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                pixel_values=batch["pixel_values"], labels=batch["labels"])
    assert out.logits is None
    loss_chunked, grads_chunked = loss_and_grads(model, batch)
    assert abs(loss_full - loss_chunked) <= 1e-5
    for k in grads_full:
        torch.testing.assert_close(grads_full[k], grads_chunked[k], rtol=1e-4, atol=1e-6, msg=k)


def test_liger_without_the_package_says_how_to_get_it():
    pytest.importorskip("torch")
    try:
        import liger_kernel  # noqa: F401
        pytest.skip("liger-kernel is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="pip install liger-kernel"):
        causal_lm_loss(torch.randn(1, 4, 8), torch.randn(16, 8), torch.randint(0, 16, (1, 4)), "liger")


def test_unknown_loss_implementation_lists_the_known_ones():
    with pytest.raises(ValueError, match="full, chunked, liger"):
        tiny_config(loss_implementation="fused")


def test_base_model_returns_hidden_states_and_head_owns_logits():
    torch.manual_seed(0)
    model = MofForConditionalGeneration(tiny_config(fusion="interleaved")).eval()
    assert isinstance(model.model, MofModel) and model.language_model is model.model.language_model
    ids = torch.tensor([[1, *[model.config.image_token_id] * model.num_visual_tokens, 10, 11]])
    pixels = [torch.randn(1, 3, 64, 64)] * 2
    hidden = model.model(input_ids=ids, pixel_values=pixels).last_hidden_state
    assert hidden.shape == (1, ids.shape[1], model.config.text_config.hidden_size)
    torch.testing.assert_close(model(input_ids=ids, pixel_values=pixels).logits, model.lm_head(hidden))


def _legacy_layout(state: dict) -> dict:
    """The names the model had before the split (mof 0.1): language_model.model.*, language_model.lm_head.*, ..."""
    out = {}
    for key, value in state.items():
        if key.startswith("lm_head."):
            out["language_model." + key] = value
        elif key.startswith("model.language_model."):
            out["language_model.model." + key.removeprefix("model.language_model.")] = value
        else:
            out[key.removeprefix("model.")] = value
    return out


def test_folders_saved_before_the_split_load_exactly(tmp_path):
    torch.manual_seed(0)
    model = MofForConditionalGeneration(tiny_config(fusion="interleaved"))
    model.config.save_pretrained(tmp_path)
    state = model.state_dict()
    save_file(_legacy_layout(state), str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    loaded = MofForConditionalGeneration.from_pretrained(tmp_path).state_dict()
    assert loaded.keys() == state.keys()
    for k in state:
        assert torch.equal(loaded[k], state[k]), k
    # and folders written now keep that layout, so older versions read them too
    model.save_pretrained(tmp_path / "new")
    written = load_file(str(tmp_path / "new" / "model.safetensors"))
    assert {k.split(".")[0] for k in written} == {"vision_encoders", "fusion", "language_model"}
    assert torch.equal(written["language_model.lm_head.weight"], state["lm_head.weight"])


def test_lightning_checkpoint_keys_migrate_and_new_ones_stay():
    old = {"model.fusion.projectors.0.0.weight": 1, "model.language_model.lm_head.weight": 2,
           "model.language_model.model.layers.0.mlp.up_proj.weight": 3,
           "model.base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.default.weight": 4,
           "model.base_model.model.fusion.modules_to_save.default.projectors.0.0.weight": 5}
    new = migrate_legacy_keys(old, LIGHTNING_PREFIXES)
    assert list(new) == ["model.model.fusion.projectors.0.0.weight", "model.lm_head.weight",
                         "model.model.language_model.layers.0.mlp.up_proj.weight",
                         "model.base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight",
                         "model.base_model.model.model.fusion.modules_to_save.default.projectors.0.0.weight"]
    assert migrate_legacy_keys(new, LIGHTNING_PREFIXES) == new


def _first_losses(run_dir):
    rows = list(csv.DictReader(open(next((run_dir / "csv").rglob("metrics.csv")))))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def test_training_with_packing_and_chunked_loss_starts_from_the_same_loss(tmp_path, data_dir):
    common = ["logger=csv", "trainer.max_steps=2", "export=false", "data.batch_size=8"]
    train(train_cfg(tmp_path / "padded", data_dir, common))
    train(train_cfg(tmp_path / "packed", data_dir, [*common, "data.packing=true", "data.pack_length=400",
                                                    "model.config.loss_implementation=chunked"]))
    padded, packed = _first_losses(tmp_path / "padded"), _first_losses(tmp_path / "packed")
    assert len(padded) == len(packed) == 2
    assert abs(padded[0] - packed[0]) <= 1e-5


def test_packed_positions_with_a_mask_or_a_cache_are_refused():
    torch.manual_seed(0)
    config = tiny_config(fusion="interleaved", vocab_size=544)
    model = MofForConditionalGeneration(config).eval()
    items = samples(config)
    packed = Collator(0, packing=True, pack_length=2 * config.num_visual_tokens + 60)(items)
    assert packed["packed"] is True and "packed" not in Collator(0)(items)
    args = dict(input_ids=packed["input_ids"], position_ids=packed["position_ids"], pixel_values=packed["pixel_values"])
    with pytest.raises(ValueError, match="packed rows .* need attention_mask=None and no cache"):
        model(**args, attention_mask=torch.ones_like(packed["input_ids"]), labels=packed["labels"])
    with pytest.raises(ValueError, match="packed rows"):
        model(**args, use_cache=True)
    # left padding restarts the positions next to the padding only: a generation prompt, not a packed row
    ids = torch.tensor([[0, 0, 5, 6, 7], [5, 6, 7, 8, 9]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    assert model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.shape == (2, 5, 544)


def test_packed_loss_equals_padded_under_flex_attention():
    """FlexAttention runs forward only on CPU (no backward there): the loss, packed against padded."""
    torch.manual_seed(0)
    config = tiny_config(fusion="interleaved", vocab_size=544)
    config.text_config._attn_implementation = "flex_attention"
    model = MofForConditionalGeneration(config).eval()
    items = samples(config)
    padded = Collator(0)(items)
    packed = Collator(0, packing=True, pack_length=2 * config.num_visual_tokens + 60)(items)
    with torch.no_grad():
        loss_a = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                       pixel_values=padded["pixel_values"], labels=padded["labels"]).loss
        loss_b = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                       pixel_values=packed["pixel_values"], labels=packed["labels"]).loss
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]
    assert abs(float(loss_a) - float(loss_b)) <= 1e-5
