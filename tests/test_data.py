import json

import numpy as np
import pytest
import torch
from PIL import Image

from mof import tiny_config
from mof.data import IGNORE_INDEX, ConversationError, DataCheckError, MofDataModule, get_template, load_tokenizer
from mof.data.collate import Collator
from mof.data.conversation import normalize_turns
from mof.data.images import ImageError, MofImageProcessor, load_image, to_rgb
from mof.data.records import DataFormatError, read_records
from mof.data.sampler import ModalityGroupedBatchSampler
from mof.data.synthetic import PATTERN_NAMES, generate
from mof.errors import ConfigError

IMG = 3


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def conv(*pairs, image=True):
    turns = []
    for i, (q, a) in enumerate(pairs):
        turns += [{"from": "human", "value": ("<image>\n" if image and i == 0 else "") + q}, {"from": "gpt", "value": a}]
    return turns


def supervised_text(tok, enc):
    return tok.decode([t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX])


@pytest.mark.parametrize("template", ["vicuna_v1", "chat_template"])
def test_multi_turn_masking_supervises_only_answers(tok, template):
    turns = normalize_turns(conv(("What color is the shape?", "Red."), ("And the shape?", "A circle.")), True)
    enc = get_template(template).encode(turns, tok, IMG, 5)
    assert len(enc.input_ids) == len(enc.labels)
    assert enc.input_ids.count(IMG) == 5
    assert all(label == IGNORE_INDEX for t, label in zip(enc.input_ids, enc.labels) if t == IMG)
    assert supervised_text(tok, enc).replace(" ", "") == "Red.</s>Acircle.</s>"
    # the instruction text is never supervised
    assert "color" not in supervised_text(tok, enc)


def test_plain_template_supervises_caption_only(tok):
    turns = normalize_turns([{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "A red square."}], True)
    enc = get_template("plain").encode(turns, tok, IMG, 4)
    assert enc.input_ids[:5] == [tok.bos_token_id] + [IMG] * 4
    assert supervised_text(tok, enc) == "A red square.\n"  # LLaVA's plain separator, no EOS


def test_image_at_end_of_turn_and_text_only(tok):
    turns = normalize_turns([{"from": "human", "value": "Describe this. <image>"}, {"from": "gpt", "value": "A dot."}], True)
    enc = get_template("vicuna_v1").encode(turns, tok, IMG, 3)
    first_img = enc.input_ids.index(IMG)  # moved to the front of the turn, as LLaVA's preprocess_multimodal
    assert tok.decode(enc.input_ids[:first_img]).endswith("USER: ")
    assert tok.decode(enc.input_ids[first_img + 3:]).startswith("\nDescribe this. ASSISTANT:")
    text_only = normalize_turns(conv(("Say hi.", "Hi."), image=False), False)
    enc = get_template("vicuna_v1").encode(text_only, tok, IMG, 3)
    assert IMG not in enc.input_ids and supervised_text(tok, enc) == " Hi.</s>"


def test_prompt_is_prefix_of_training_sequence(tok):
    turns = normalize_turns(conv(("Which way?", "(a)")), True)
    for name in ("vicuna_v1", "chat_template"):
        t = get_template(name)
        full = t.encode(turns, tok, IMG, 4).input_ids
        prompt = t.encode_prompt(turns[:1], tok, IMG, 4)
        assert full[:len(prompt)] == prompt


@pytest.mark.parametrize("conversations,reason", [
    (None, "no_conversations"),
    ([{"from": "gpt", "value": "hi"}, {"from": "human", "value": "x"}], "bad_role_order"),
    ([{"from": "human", "value": "  "}, {"from": "gpt", "value": "x"}], "empty_text"),
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "<image>"}], "misplaced_image_token"),
])
def test_bad_conversations_name_their_reason(conversations, reason):
    with pytest.raises(ConversationError) as e:
        normalize_turns(conversations, True)
    assert e.value.reason == reason


def write_dataset(tmp_path, records, name="data.json", jsonl=False):
    path = tmp_path / name
    if jsonl:
        path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def make_image(path, mode="RGB", size=(40, 30)):
    Image.new(mode, size, 128 if mode in ("L", "P", "I;16") else (200, 10, 10)[:len(mode)] if mode != "CMYK" else (0, 0, 0, 0)).save(path)
    return path


def datamodule(tmp_path, records, tok, max_length=512, fusion="interleaved", **kw):
    path = write_dataset(tmp_path, records)
    dm = MofDataModule([{"path": str(path), "image_root": str(tmp_path)}], template="vicuna_v1", batch_size=2,
                       num_workers=0, max_length=max_length, **kw)
    return dm.bind(tiny_config(fusion=fusion), tok)


def test_bad_samples_are_skipped_and_counted(tmp_path, tok):
    make_image(tmp_path / "ok.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    records = [
        {"id": 1, "image": "ok.png", "conversations": conv(("Q?", "A."))},
        {"id": 2, "image": "missing.png", "conversations": conv(("Q?", "A."))},
        {"id": 3, "image": "truncated.png", "conversations": conv(("Q?", "A."))},
        {"id": 4, "image": "../outside.png", "conversations": conv(("Q?", "A."))},
        {"id": 5, "conversations": [{"from": "gpt", "value": "A."}, {"from": "human", "value": "Q?"}]},
        {"id": 6},
        {"id": 7, "conversations": conv(("Text only?", "Yes."), image=False)},
    ]
    dm = datamodule(tmp_path, records, tok, max_skipped_fraction=1.0)
    dm.setup()
    assert dm.dataset.read_skipped == {"no_conversations": 1}  # judged by type when read
    batch = Collator(tok.pad_token_id)([dm.dataset[i] for i in range(len(dm.dataset))])
    assert batch["skipped"] == {"missing_image": 1, "bad_image": 1, "unsafe_image_path": 1, "bad_role_order": 1}
    assert batch["num_samples"] == 2
    assert batch["input_ids"].shape[0] == 2 and len(batch["pixel_values"]) == 2
    assert batch["pixel_values"][0].shape == (1, 3, 64, 64)  # only the sample with an image has pixels


def test_a_truncated_image_is_bad_even_when_another_library_lets_pil_load_truncated_files(tmp_path):
    """lmms-eval's task module sets PIL's module-wide `LOAD_TRUNCATED_IMAGES = True` when imported (found when the
    tests first shared a process with it: the truncated PNG above decoded, grey where it was cut). mof's decoder
    still refuses the file, and leaves the switch as it found it."""
    from PIL import ImageFile

    from mof.data.images import ImageError, decode_image

    make_image(tmp_path / "ok.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    was = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(ImageError) as e:
            decode_image(tmp_path / "truncated.png", "truncated.png")
        assert e.value.reason == "bad_image" and ImageFile.LOAD_TRUNCATED_IMAGES is True
        assert decode_image(tmp_path / "ok.png", "ok.png").size == (40, 30)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = was


def test_jsonl_bad_lines_skipped_and_non_json_file_is_a_clear_error(tmp_path):
    good = json.dumps({"id": 1, "conversations": conv(("Q?", "A."), image=False)})
    path = write_dataset(tmp_path, [good, "{not json", good], name="d.jsonl", jsonl=True)
    records, skipped = read_records(path)
    assert len(records) == 2 and skipped == {"invalid_json_line": 1}
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"id": 1},\n  {"id": 2,,}\n]')
    with pytest.raises(DataFormatError, match=r"bad.json:3:\d+: not valid JSON"):
        read_records(bad)
    notjson = tmp_path / "notes.jsonl"
    notjson.write_text("hello\nworld\n")
    with pytest.raises(DataFormatError, match=r"notes.jsonl:1: not valid JSON"):
        read_records(notjson)


def test_truncation_never_cuts_visual_tokens(tmp_path, tok):
    make_image(tmp_path / "a.png")
    long_answer = " ".join(["red square"] * 40)
    records = [{"id": 1, "image": "a.png", "conversations": conv(("Q?", long_answer))}]
    dm = datamodule(tmp_path, records, tok, max_length=100, max_skipped_fraction=1.0)  # 128 visual tokens > 100
    dm.setup()
    assert dm.dataset[0] == {"skip": "truncated_visual_tokens", "index": 0}
    dm = datamodule(tmp_path, records, tok, max_length=200)
    dm.setup()
    item = dm.dataset[0]
    assert item["truncated"] and len(item["input_ids"]) == 200
    assert (item["input_ids"] == IMG).sum() == 128
    assert (item["labels"] != IGNORE_INDEX).sum() > 0


def test_fully_masked_guard_refuses_to_train(tmp_path, tok):
    make_image(tmp_path / "a.png")
    records = [{"id": i, "image": "a.png", "conversations": conv(("Q " * 60, "A."))} for i in range(10)]
    dm = datamodule(tmp_path, records, tok, max_length=160, fusion="none")  # the question pushes every answer out
    with pytest.raises(DataCheckError, match=r"100.0% of the samples would be skipped.*10 of 10 checked records: "
                                             r"fully_masked_after_truncation x10.*template 'vicuna_v1'"):
        dm.setup()


def test_image_modes_exif_and_bomb_limit(tmp_path):
    for mode in ("RGBA", "P", "L", "CMYK", "I;16", "LA", "1"):
        p = tmp_path / f"im_{mode.replace(';', '')}.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
        make_image(p, mode)
        img = load_image(p)
        assert img.mode == "RGB" and img.size == (40, 30), mode
    sixteen = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_rgb(sixteen).getpixel((0, 0)) == (255, 255, 255)
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)
    # EXIF orientation 6 (rotate 90): a 40x30 image is shown as 30x40
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30), "red").save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (30, 40)
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "rot.jpg", max_pixels=100)
    assert e.value.reason == "image_too_large"


def test_per_encoder_preprocessing_pad_colour_and_paper_option():
    config = tiny_config(fusion="interleaved")
    config.vision_encoders[1]["image_size"] = 32
    config.vision_encoders[1]["config"]["patch_size"] = 4
    proc = MofImageProcessor.from_model_config(config)
    wide = Image.new("RGB", (60, 20), (255, 255, 255))
    clip_px, dino_px = proc(wide)
    assert clip_px.shape == (3, 64, 64) and dino_px.shape == (3, 32, 32)
    # the padded border holds the encoder's mean colour, which normalises to ~0
    assert clip_px[:, 0, 32].abs().max() < 0.02 and dino_px[:, 0, 16].abs().max() < 0.02
    white = (1 - torch.tensor(config.encoder_specs[0].image_mean)) / torch.tensor(config.encoder_specs[0].image_std)
    torch.testing.assert_close(clip_px[:, 32, 32], white, atol=1e-4, rtol=0)
    same = MofImageProcessor.from_model_config(tiny_config(), share_first=True)(wide)
    assert same[0] is same[1]
    with pytest.raises(ValueError, match="same image size"):
        MofImageProcessor.from_model_config(config, share_first=True)


def test_sampler_is_seeded_grouped_and_resumable():
    lengths = [10 if i % 3 else -5 for i in range(50)]
    s = ModalityGroupedBatchSampler(lengths, batch_size=4, seed=1)
    first = list(s)
    assert first == list(ModalityGroupedBatchSampler(lengths, batch_size=4, seed=1))
    assert first != list(ModalityGroupedBatchSampler(lengths, batch_size=4, seed=2))
    for batch in first:  # no batch mixes samples with and without images
        assert len({lengths[i] > 0 for i in batch}) == 1
    assert sorted(i for b in first for i in b) == list(range(50))
    s.set_epoch(1)
    assert list(s) != first
    resumed = ModalityGroupedBatchSampler(lengths, batch_size=4, seed=1)
    resumed.load_state_dict({"epoch": 0, "consumed": 5})
    assert list(resumed) == first[5:]
    assert len(resumed) == len(first)
    resumed.set_epoch(1)  # a resume position applies to its own epoch only
    resumed.load_state_dict({"epoch": 0, "consumed": 5})
    resumed.set_epoch(1)
    assert len(list(resumed)) == len(first)


def test_sampler_splits_global_batches_across_ranks():
    lengths = [10] * 16
    ranks = [list(ModalityGroupedBatchSampler(lengths, 2, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    assert not set(sum(ranks[0], [])) & set(sum(ranks[1], []))


def test_dataset_mixing_weights(tmp_path, tok):
    a = write_dataset(tmp_path, [{"id": i, "conversations": conv(("Q?", "A."), image=False)} for i in range(10)], "a.json")
    b = write_dataset(tmp_path, [{"id": i, "conversations": conv(("Q?", "B."), image=False)} for i in range(10)], "b.json")
    dm = MofDataModule([{"path": str(a), "weight": 2.0}, {"path": str(b), "weight": 0.5}], num_workers=0)
    dm.bind(tiny_config(), tok).setup()
    sources = [src for _, src in dm.dataset.records]
    assert sources.count(0) == 20 and sources.count(1) == 5


def test_synthetic_data_is_deterministic_and_covers_nine_patterns(tmp_path):
    from mof.evaluation.benchmarks.synthetic import synthetic_benchmark_root

    a = generate(tmp_path / "a" / "synthetic" / "train", pairs_per_pattern=2, seed=3).parent
    b = generate(tmp_path / "b" / "synthetic" / "train", pairs_per_pattern=2, seed=3).parent
    for d in (a, b):
        synthetic_benchmark_root(d.parent, pairs_per_pattern=1, seed=3)
    assert (a / "benchmark/Questions.csv").read_text() == (b / "benchmark/Questions.csv").read_text()
    assert (a / "train/instruct.json").read_text() == (b / "train/instruct.json").read_text()
    assert (a / "train/images/000005.png").read_bytes() == (b / "train/images/000005.png").read_bytes()
    rows = (a / "benchmark/Questions.csv").read_text().splitlines()
    assert rows[0] == "Index,Question,Options,Correct Answer,Pattern"
    assert {r.rsplit(",", 1)[1] for r in rows[1:]} == set(PATTERN_NAMES) and len(PATTERN_NAMES) == 9
    pairs = [rows[i:i + 2] for i in range(1, len(rows), 2)]
    for first, second in pairs:  # same question, opposite answers
        assert first.split(",")[1] == second.split(",")[1]
        assert {first.split(",")[3], second.split(",")[3]} == {"(a)", "(b)"}
    img1 = np.asarray(Image.open(a / "benchmark/MMVP Images/1.jpg"), dtype=float)
    img2 = np.asarray(Image.open(a / "benchmark/MMVP Images/2.jpg"), dtype=float)
    assert np.abs(img1 - img2).mean() > 1.0


def test_question_share_keeps_whole_question_pairs_of_the_named_properties(tmp_path):
    """`data=synthetic_rare`'s mechanism: of the named properties, that share of the question pairs (both images of
    a scene, asked the same question); the other questions, every caption and every image as without it."""
    every = generate(tmp_path / "every", pairs_per_pattern=20)
    rare = generate(tmp_path / "rare", pairs_per_pattern=20, question_share={"orientation": 0.5, "viewpoint": 0.0})
    q_every, q_rare = (json.loads((d / "instruct.json").read_text()) for d in (every, rare))
    assert (rare / "captions.json").read_text() == (every / "captions.json").read_text()
    assert (rare / "images/000001.png").read_bytes() == (every / "images/000001.png").read_bytes()
    by_pattern = lambda qs, name: [q for q in qs if q["pattern"] == name]  # noqa: E731
    orient, view = "orientation and direction", "viewpoint and perspective"
    assert by_pattern(q_rare, view) == []
    kept = by_pattern(q_rare, orient)
    assert 0 < len(kept) < 40 and len(by_pattern(q_every, orient)) == 40
    ids = sorted(int(q["id"].split("-")[1]) for q in kept)
    assert all(a + 1 == b and a % 2 == 0 for a, b in zip(ids[::2], ids[1::2]))   # whole pairs: images 2k and 2k+1
    assert all(q in q_every for q in kept)
    others = [q for q in q_every if q["pattern"] not in (orient, view)]
    assert [q for q in q_rare if q["pattern"] not in (orient, view)] == others and len(others) == 7 * 40


@pytest.mark.parametrize("share, message", [
    ({"orientaton": 0.1}, "data.synthetic.question_share: unknown property 'orientaton' (did you mean 'orientation'?)"),
    ({"viewpoint": 1.5}, "data.synthetic.question_share.viewpoint: expected a share between 0 and 1, got 1.5")])
def test_a_wrong_question_share_is_refused_naming_the_key(tmp_path, share, message):
    with pytest.raises(ConfigError) as e:
        MofDataModule(synthetic={"out": str(tmp_path / "s"), "question_share": share}, num_workers=0)
    assert str(e.value).startswith(message)
    assert not (tmp_path / "s").exists()


def _build_alongside(out, log, barrier):
    """One of the processes that start together on a data set (ranks, a study's runs side by side): each counts its
    builds in `log` and, once the set is there, reads every file of it."""
    import time

    from mof.data.synthetic import write_once

    def write(folder):
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)  # long enough for the others to arrive while it builds
        for i in range(20):
            (folder / f"{i}.txt").write_text(str(i))
        return {"files": 20}

    barrier.wait()
    got = write_once(out, {"v": 1}, write)
    assert sorted(int(p.stem) for p in got.glob("*.txt")) == list(range(20))


def test_processes_starting_together_build_a_data_set_once_and_none_loses_it(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_build_alongside, args=(tmp_path / "set", tmp_path / "log", barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert (tmp_path / "log").read_text() == "built\n"  # one writer; the others waited and found it complete
    assert sorted(p.name for p in (tmp_path).iterdir() if p.name.startswith("set")) == ["set"]  # no private folder left
