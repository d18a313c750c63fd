"""Fidelity with LLaVA-1.5 and the paper's released code: pixels, tokenizers as users have them, the recipe."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from helpers import compose_cfg
from mof.data import MofImageProcessor, load_tokenizer
from mof.data.images import EncoderTransform
from mof.model.vision_encoders import CLIP_MEAN, CLIP_STD

SIZES = [(300, 200), (200, 300), (337, 500), (640, 480), (101, 999), (50, 40), (336, 336)]


def expand2square(pil_img, background_color):
    """LLaVA's `expand2square` (llava/mm_utils.py), as published."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    if width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    result = Image.new(pil_img.mode, (height, height), background_color)
    result.paste(pil_img, ((height - width) // 2, 0))
    return result


@pytest.fixture(scope="module")
def clip_processor():
    return CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})


def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


def test_pad_is_pixel_exact_with_llava(clip_processor):
    ours = EncoderTransform(336, list(CLIP_MEAN), list(CLIP_STD))
    fill = tuple(int(x * 255) for x in clip_processor.image_mean)
    assert fill == (122, 116, 104)
    for img in images():
        ref = clip_processor(images=expand2square(img, fill), return_tensors="pt")["pixel_values"][0]
        assert (ours(img, "pad") - ref).abs().max().item() == 0.0, img.size


def test_crop_is_pixel_exact_with_clip_image_processor(clip_processor):
    ours = EncoderTransform(336, list(CLIP_MEAN), list(CLIP_STD))
    for img in images():
        ref = clip_processor(images=img, return_tensors="pt")["pixel_values"][0]
        assert (ours(img, "crop") - ref).abs().max().item() == 0.0, img.size


def test_image_processor_modes_and_their_errors():
    with pytest.raises(ValueError, match="expected 'pad', 'crop' or 'resize'"):
        MofImageProcessor([{"size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}], mode="square")


def vicuna_folder(root: Path, texts: list[str], vocab_size: int, model: Path | None = None) -> Path:
    """A Llama SentencePiece tokenizer in lmsys/vicuna-7b-v1.5's layout: tokenizer.model + tokenizer_config.json +
    special_tokens_map.json (no tokenizer.json); `model`: a SentencePiece model trained already."""
    import sentencepiece as spm

    if model is None:
        (root / "corpus.txt").write_text("\n".join(texts))
        spm.SentencePieceTrainer.train(input=str(root / "corpus.txt"), model_prefix=str(root / "tokenizer"),
                                       vocab_size=vocab_size, model_type="bpe", byte_fallback=True, bos_id=1, eos_id=2,
                                       unk_id=0, pad_id=-1, character_coverage=1.0, minloglevel=2)
        model = root / "tokenizer.model"
    folder = root / "vicuna"
    folder.mkdir()
    model.rename(folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": False, "pad_token": None}))
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return folder


def test_vicuna_tokenizer_folder_loads(tmp_path):
    import sentencepiece as spm

    folder = vicuna_folder(tmp_path, ["A chat between a curious user and an artificial intelligence assistant.",
                                      "USER: What is shown? ASSISTANT: A red square."] * 50, 400)
    tok = load_tokenizer(str(folder))
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    text = "USER: What is shown? ASSISTANT:"
    assert tok(text).input_ids == [1] + sp.encode(text)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 0)  # LLaVA pads with <unk>


@pytest.mark.parametrize("experiment", ["llava15_imof_stage1", "llava15_imof_stage2", "llava_amof_stage2"])
def test_paper_experiments_feed_dinov2_clips_pixels(tmp_path, experiment):
    cfg = compose_cfg("train", tmp_path, tmp_path, [f"experiment={experiment}"])
    assert cfg.data.share_first is True
    assert cfg.data.image_mode == ("crop" if experiment.endswith("stage1") else "pad")


# ----------------------------------------------------------------------------- tokens: LLaVA's rules, written anew
IMAGE_INDEX = -200  # LLaVA's IMAGE_TOKEN_INDEX
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def llava_tokenizer_image_token(prompt, tokenizer):
    chunks = [tokenizer(c).input_ids for c in prompt.split("<image>")]
    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    separated = [x for pair in zip(chunks, [[IMAGE_INDEX] * (offset + 1)] * len(chunks)) for x in pair][:-1]
    for x in separated:
        ids.extend(x[offset:])
    return ids


def llava_preprocess_multimodal(turns):
    out = []
    for t in turns:
        value = t["value"]
        if "<image>" in value:
            value = ("<image>\n" + value.replace("<image>", "").strip()).strip()
        out.append({**t, "value": value})
    return out


def llava_v1(turns, tokenizer):
    """`preprocess_v1` of haotian-liu/LLaVA (conv_vicuna_v1): ids and its length-arithmetic labels."""
    turns = llava_preprocess_multimodal(turns)
    roles = {"human": "USER", "gpt": "ASSISTANT"}
    prompt = SYSTEM + " "
    for i, t in enumerate(turns):
        prompt += roles[t["from"]] + ": " + t["value"] + (" " if i % 2 == 0 else "</s>")
    ids = llava_tokenizer_image_token(prompt, tokenizer)
    labels = list(ids)
    sep = " ASSISTANT: "
    cur = 1
    labels[:cur] = [-100] * cur
    for i, rou in enumerate(prompt.split("</s>")):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(llava_tokenizer_image_token(rou, tokenizer))
        instruction_len = len(llava_tokenizer_image_token(parts[0], tokenizer)) - 2
        if i != 0 and not getattr(tokenizer, "legacy", True):
            round_len -= 1
            instruction_len -= 1
        labels[cur:cur + instruction_len] = [-100] * instruction_len
        cur += round_len
    labels[cur:] = [-100] * (len(labels) - cur)
    if cur != len(ids):  # LLaVA's "tokenization mismatch": the whole sample is masked
        labels = [-100] * len(ids)
    return ids, [-100 if t == IMAGE_INDEX else lab for t, lab in zip(ids, labels)]


def llava_plain(turns, tokenizer):
    text = "<image>" + turns[1]["value"] + "\n"
    ids = llava_tokenizer_image_token(text, tokenizer)
    n = len(llava_tokenizer_image_token("<image>", tokenizer))
    return ids, [-100] * n + ids[n:]


def h(v):
    return {"from": "human", "value": v}


def g(v):
    return {"from": "gpt", "value": v}


CONVERSATIONS = [
    [h("<image>\nWhat is in the image?"), g("A red square on a white background.")],
    [h("What is in the image?\n<image>"), g("A dog.")],
    [h("Describe this picture. <image>"), g("Two cats sleeping on a sofa, one black and one white.")],
    [h("<image>\nIs the person standing or sitting?\n(a) Standing (b) Sitting\n"
       "Answer with the option's letter from the given choices directly."), g("(a)")],
    [h("<image>\nHow many apples?"), g("Three."), h("And pears?"), g("Two pears, both green.")],
    [h("<image>\nWhat color is the car?"), g("Blue."), h("Is it moving?"), g("No, it is parked."),
     h("Where?"), g("Next to a red brick building.")],
    [h("Write a haiku about autumn."), g("Leaves drift to the ground,\ncool wind hums through empty trees,\nthe year exhales slow.")],
    [h("What is 2 + 2?"), g("4")],
    [h("<image>\nQu'est-ce que c'est ? Répondez en français."), g("C'est un château médiéval, près d'un lac.")],
    [h("<image>\nWhat does the sign say?"), g('It says "STOP" in white letters.')],
    [h("<image>\nList the objects."), g("- a lamp\n- a chair\n- a table with three books")],
    [h("<image>\nExplain the chart in detail."), g(" ".join(["The sales rise steadily through the year."] * 12))],
    [h("<image>\nWhat time is it on the clock?"), g("It is 10:45.")],
    [h("  <image>\n  Describe the scene.  "), g("  A busy market street at dusk.  ")],
    [h("<image>\nIs there a cat?"), g("Yes."), h("What is it doing?"), g("Sleeping.")],
    [h("Translate 'good morning' to German."), g("Guten Morgen.")],
    [h("<image>\nWhat emotion does the face show? 🙂"), g("Happiness 😊.")],
    [h("<image>\nRead the text: 日本語"), g("It reads 日本語, which means Japanese.")],
    [h("<image>\nWhich direction is the arrow pointing?"), g("Left."), h("Are you sure?"), g("Yes, left.")],
    [h("Give me three colors."), g("Red, green, and blue."), h("Two more?"), g("Yellow and purple.")],
    [h("<image>\nWhat is the person holding?"), g("An umbrella (black, folded).")],
    [h("<image>\nDescribe the weather."), g("Overcast; light rain; about 12°C.")],
]
WHERE_LLAVA_IS_WRONG = [  # LLaVA's arithmetic masks these whole; mof supervises the answers
    [h("<image>\nWhat is the end-of-sequence token?"), g("It is written </s> in Llama models.")],
    [h("<image>\nQuote the template."), g("It says USER: hi ASSISTANT: hello.")],
]


# ------------------------------------------- LLaVA's tokenizer as it trained: slow, SentencePiece, spaces kept
class SlowLlamaReference:
    """LLaVA's tokenizer as it trained (transformers 4.37 `LlamaTokenizer`, `use_fast=False`, `legacy=False`, on a
    SentencePiece model whose normaliser keeps spaces, as Llama's does), written with sentencepiece alone: `</s>`
    split out as EOS; the text's first piece encoded with SentencePiece's dummy prefix, pieces after `</s>` without;
    BOS in front; an empty text has no tokens but BOS."""

    bos_token_id, eos_token_id, legacy = 1, 2, False

    def __init__(self, model_file):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2

        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(Path(model_file).read_bytes())
        proto.normalizer_spec.add_dummy_prefix = False
        self.sp_after_special = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

    def __call__(self, text):
        import re
        from types import SimpleNamespace

        ids = [self.bos_token_id]
        for i, part in enumerate(re.split(r"(</s>)", text)):
            if part == "</s>":
                ids.append(self.eos_token_id)
            elif part:
                ids += (self.sp if i == 0 else self.sp_after_special).encode(part)
        return SimpleNamespace(input_ids=ids)


LEADING_SPACES = [  # chunks after <image> that start with a space: the transformers 5 tokenizer drops their first ▁
    [h("<image>"), g("A red square.")],                          # vicuna_v1: "USER: <image> ASSISTANT: ..."
    [h("Look: <image> What is it?"), g("A dog.")],
    [h("<image>\nWhat is in the image?"), g("A red square on a white background.")],
]
PLAIN_CAPTIONS = [" a red square", "  two leading spaces", "no space", " A dog.\nOn grass."]


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """A vicuna-layout folder over a SentencePiece model with Llama's normaliser (identity, spaces kept)."""
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("llama")
    texts = [SYSTEM, "USER: ASSISTANT:", *PLAIN_CAPTIONS] + [t["value"] for c in CONVERSATIONS + WHERE_LLAVA_IS_WRONG
                                                            for t in c]
    (root / "corpus.txt").write_text("\n".join(texts * 20))
    spm.SentencePieceTrainer.train(input=str(root / "corpus.txt"), model_prefix=str(root / "tokenizer"), vocab_size=800,
                                   model_type="bpe", byte_fallback=True, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
                                   character_coverage=1.0, minloglevel=2, normalization_rule_name="identity",
                                   remove_extra_whitespaces=False, add_dummy_prefix=True)
    return vicuna_folder(root, [], 0, model=root / "tokenizer.model")


@pytest.fixture(scope="module")
def llama_tokenizer(llama_folder):
    """mof's tokenizer: the folder as transformers 5 loads it."""
    return load_tokenizer(str(llama_folder))


@pytest.fixture(scope="module")
def llava_tokenizer(llama_folder):
    """LLaVA's tokenizer over the same model, as it trained (see `SlowLlamaReference`)."""
    return SlowLlamaReference(llama_folder / "tokenizer.model")


def mof_encode(template, turns, tokenizer):
    from mof.data import get_template, normalize_turns

    has_image = any("<image>" in t["value"] for t in turns)
    enc = get_template(template).encode(normalize_turns(turns, has_image), tokenizer, IMAGE_INDEX, 1)
    return enc.input_ids, enc.labels


@pytest.mark.parametrize("k", range(len(CONVERSATIONS)))
def test_vicuna_v1_is_token_exact_with_llava(llama_tokenizer, llava_tokenizer, k):
    ref_ids, ref_labels = llava_v1(CONVERSATIONS[k], llava_tokenizer)
    ids, labels = mof_encode("vicuna_v1", CONVERSATIONS[k], llama_tokenizer)
    assert ids == ref_ids
    if any(x != -100 for x in ref_labels):  # LLaVA's length arithmetic holds: the labels are equal
        assert labels == ref_labels
    else:  # it does not (multi-turn: `USER` after `</s>` is two pieces here, one alone): LLaVA masks all, mof not
        answers = "".join(t["value"] + "</s>" for t in CONVERSATIONS[k] if t["from"] == "gpt")
        supervised = llama_tokenizer.decode([t for t, lab in zip(ids, labels) if lab != -100])
        assert "".join(supervised.split()) == "".join(answers.split())


@pytest.mark.parametrize("k", range(len(WHERE_LLAVA_IS_WRONG)))
def test_where_llavas_arithmetic_masks_everything_mof_stays_right(llama_tokenizer, llava_tokenizer, k):
    turns = WHERE_LLAVA_IS_WRONG[k]
    ref_ids, ref_labels = llava_v1(turns, llava_tokenizer)
    ids, labels = mof_encode("vicuna_v1", turns, llama_tokenizer)
    assert all(x == -100 for x in ref_labels)  # LLaVA trains on nothing of this sample
    supervised = llama_tokenizer.decode([t for t, lab in zip(ids, labels) if lab != -100])
    assert supervised.strip().startswith(turns[1]["value"].split()[0]) and supervised.endswith("</s>")
    if "</s>" in turns[1]["value"]:  # the literal stays text: one EOS, the template's
        assert ids.count(llama_tokenizer.eos_token_id) == 1 and ref_ids.count(llama_tokenizer.eos_token_id) == 2
    else:
        assert ids == ref_ids


@pytest.mark.parametrize("k", [i for i, c in enumerate(CONVERSATIONS) if len(c) == 2 and "<image>" in c[0]["value"]])
def test_plain_is_token_exact_with_llava(llama_tokenizer, llava_tokenizer, k):
    turns = CONVERSATIONS[k]
    assert mof_encode("plain", turns, llama_tokenizer) == llava_plain(turns, llava_tokenizer)


def test_evaluation_prompt_equals_llavas_generation_prompt(llama_tokenizer, llava_tokenizer):
    from mof.data.prompts import format_mcq_prompt

    question = format_mcq_prompt("Is the person standing or sitting?", "(a) Standing (b) Sitting")
    prompt = f"{SYSTEM} USER: <image>\n{question} ASSISTANT:"  # conv_vicuna_v1.get_prompt() with an open answer
    ids, _ = mof_encode("vicuna_v1", [h("<image>\n" + question), g("x")], llama_tokenizer)
    from mof.data import get_template

    prompt_ids = get_template("vicuna_v1").encode_prompt([("user", "<image>\n" + question)], llama_tokenizer,
                                                         IMAGE_INDEX, 1)
    assert prompt_ids == llava_tokenizer_image_token(prompt, llava_tokenizer)
    assert ids[:len(prompt_ids)] == prompt_ids


def test_dinov2_hub_position_interpolation():
    """The paper's code loads DINOv2 through torch.hub, whose resizing differs from transformers'."""
    import math

    import torch.nn.functional as F

    from mof.model.vision_encoders import EncoderSpec, VisionEncoder

    config = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "patch_size": 8, "image_size": 64}
    torch.manual_seed(0)
    hf = VisionEncoder(EncoderSpec(type="dinov2", config=config, image_size=48))
    hub = VisionEncoder(EncoderSpec(type="dinov2", config=config, image_size=48, position_interpolation="dinov2_hub"))
    hub.load_state_dict(hf.state_dict())
    pos = hub.tower.embeddings.position_embeddings
    # facebookresearch/dinov2 `interpolate_pos_encoding`, written out: offset 0.1, scale factors, no antialias
    m, w0 = int(math.sqrt(pos.shape[1] - 1)), 48 // 8
    grid = pos[:, 1:].reshape(1, m, m, 32).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((w0 + 0.1) / m, (w0 + 0.1) / m), mode="bicubic", antialias=False)
    expected = torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, 32)), dim=1)
    emb = torch.zeros(1, 1 + w0 * w0, 32)
    torch.testing.assert_close(hub.tower.embeddings.interpolate_pos_encoding(emb, 48, 48), expected, rtol=0, atol=0)
    assert not torch.allclose(hf.tower.embeddings.interpolate_pos_encoding(emb, 48, 48), expected)
    px = torch.randn(2, 3, 48, 48)
    assert hub(px).shape == hf(px).shape == (2, 36, 32) and not torch.allclose(hub(px), hf(px))
    with pytest.raises(ValueError, match="'dinov2_hub' is for DINOv2 only"):
        EncoderSpec(type="clip", config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                                        "patch_size": 8, "image_size": 32}, position_interpolation="dinov2_hub")


@pytest.mark.parametrize("experiment", ["llava15_imof_stage1", "llava15_imof_stage2", "llava_amof_stage2"])
def test_paper_experiments_use_the_hub_interpolation(tmp_path, experiment):
    from mof.training.from_config import model_config_from

    config = model_config_from(compose_cfg("train", tmp_path, tmp_path, [f"experiment={experiment}"]))
    assert [s.position_interpolation for s in config.encoder_specs] == ["hf", "dinov2_hub"]


def test_transformers_5_drops_a_leading_space_that_llava_keeps(llama_tokenizer, llava_tokenizer):
    tok, llava = llama_tokenizer, llava_tokenizer
    assert tok(" a red square").input_ids != llava(" a red square").input_ids   # the trap, as transformers 5 has it
    assert tok("a red square").input_ids == llava("a red square").input_ids


@pytest.mark.parametrize("k", range(len(LEADING_SPACES)))
def test_vicuna_v1_keeps_leading_spaces_as_llava(llama_tokenizer, llava_tokenizer, k):
    tok, llava = llama_tokenizer, llava_tokenizer
    ids, labels = mof_encode("vicuna_v1", LEADING_SPACES[k], tok)
    ref_ids, ref_labels = llava_v1(LEADING_SPACES[k], llava)
    assert ids == ref_ids and labels == ref_labels


@pytest.mark.parametrize("caption", PLAIN_CAPTIONS)
def test_plain_captions_keep_leading_spaces_as_llava(llama_tokenizer, llava_tokenizer, caption):
    tok, llava = llama_tokenizer, llava_tokenizer
    turns = [h("<image>"), g(caption)]
    assert mof_encode("plain", turns, tok) == llava_plain(turns, llava)


def test_a_sample_with_an_image_but_no_placeholder_gets_one_first():
    """LLaVA trains such a sample without its image (no `<image>` to replace); mof puts the image first, where
    LLaVA's `preprocess_multimodal` moves a placeholder."""
    from mof.data import normalize_turns

    turns = normalize_turns([h("What is in the image?"), g("A dog.")], has_image=True)
    assert turns[0] == ("user", "<image>\nWhat is in the image?")
