"""The hostile corpus: bad records, bad files, each with the outcome mof must give.

`RECORDS`: (name, record, expected) with expected a skip reason, or "ok" (trained on, correctly). Image names
refer to the files `write_images` creates. `FILES`: (name, file text or bytes, expected) for whole dataset files:
"error:<regex>" (a one-line error naming the file) or a dict of the read-time skip counts.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

GOOD_TURNS = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A red square."}]
TEXT_TURNS = [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]


def rec(image="ok.png", turns=None, **extra):
    r = {"id": "x", "conversations": GOOD_TURNS if turns is None else turns, **extra}
    if image is not None:
        r["image"] = image
    return r


def h(v):
    return {"from": "human", "value": v}


def g(v):
    return {"from": "gpt", "value": v}


RECORDS = [
    # the image field
    ("image_is_a_number", rec(image=5), "bad_image_field"),
    ("image_is_a_list", rec(image=["ok.png"]), "bad_image_field"),
    ("image_is_a_dict", rec(image={"path": "ok.png"}), "bad_image_field"),
    ("image_is_true", rec(image=True), "bad_image_field"),
    ("image_is_empty", rec(image=""), "bad_image_field"),
    ("image_holds_nul", rec(image="ok\x00.png"), "bad_image_field"),
    ("image_absolute_path", rec(image="/etc/passwd"), "unsafe_image_path"),
    ("image_escapes_root", rec(image="../outside.png"), "unsafe_image_path"),
    ("image_missing", rec(image="nowhere.png"), "missing_image"),
    ("image_is_a_directory", rec(image="folder.png"), "missing_image"),
    ("image_truncated", rec(image="truncated.png"), "bad_image"),
    ("image_not_an_image", rec(image="text.png"), "bad_image"),
    ("image_zero_bytes", rec(image="empty.png"), "bad_image"),
    ("image_200000x1", rec(image="line.png"), "image_too_large"),
    ("image_10000x10", rec(image="strip.png"), "image_too_large"),
    ("image_padded_square_too_large", rec(image="wide.png"), "image_too_large"),
    # the conversation
    ("conversations_a_number", rec(turns=5), "no_conversations"),
    ("conversations_a_string", rec(turns="hello"), "no_conversations"),
    ("conversations_empty", rec(turns=[]), "no_conversations"),
    ("conversations_null", rec(turns=None, conversations=None), "no_conversations"),
    ("conversations_a_dict", rec(turns={"from": "human"}), "no_conversations"),
    ("conversations_missing", {"id": 1, "image": "ok.png"}, "no_conversations"),
    ("turn_is_a_string", rec(turns=["hi", "there"]), "bad_turn"),
    ("turn_without_from", rec(turns=[{"value": "q"}, g("a")]), "bad_turn"),
    ("turn_without_value", rec(turns=[{"from": "human"}, g("a")]), "bad_turn"),
    ("from_is_a_list", rec(turns=[{"from": ["human"], "value": "q"}, g("a")]), "bad_turn"),
    ("from_is_a_dict", rec(turns=[{"from": {"r": "human"}, "value": "q"}, g("a")]), "bad_turn"),
    ("value_is_a_number", rec(turns=[h(3), g("a")]), "bad_turn"),
    ("value_is_a_list", rec(turns=[h(["q"]), g("a")]), "bad_turn"),
    ("value_is_null", rec(turns=[h(None), g("a")]), "bad_turn"),
    ("value_empty", rec(turns=[h("<image>\nq"), g("")]), "empty_text"),
    ("value_whitespace", rec(turns=[h("<image>\nq"), g("   \n")]), "empty_text"),
    ("unknown_role", rec(turns=[{"from": "system", "value": "be nice"}, g("a")]), "bad_role_order"),
    ("two_user_turns", rec(turns=[h("q"), h("q2")]), "bad_role_order"),
    ("starts_with_the_assistant", rec(turns=[g("a"), h("q")]), "bad_role_order"),
    ("ends_with_the_user", rec(turns=[h("q"), g("a"), h("q2")]), "bad_role_order"),
    ("image_token_in_an_answer", rec(turns=[h("q"), g("a <image>")]), "misplaced_image_token"),
    ("two_image_tokens", rec(turns=[h("<image> <image> q"), g("a")]), "misplaced_image_token"),
    ("image_token_without_image", rec(image=None, turns=[h("<image>\nq"), g("a")]), "image_token_without_image"),
    ("image_after_a_long_question", rec(turns=[h("word " * 600 + "<image>"), g("a")]), "fully_masked_after_truncation"),
    ("answer_cut_by_max_length", rec(turns=[h("<image>\n" + "word " * 600), g("a")]), "fully_masked_after_truncation"),
    # records that are not objects
    ("record_is_a_list", [1, 2], "not_an_object"),
    ("record_is_a_string", "a record", "not_an_object"),
    ("record_is_null", None, "not_an_object"),
    ("record_is_a_number", 7, "not_an_object"),
    # unusual but valid: trained on, correctly
    ("literal_eos_in_an_answer", rec(turns=[h("<image>\nq"), g("the tag </s> is text")]), "ok"),
    ("literal_pad_in_a_question", rec(turns=[h("<image>\nwhat is <pad>?"), g("a")]), "ok"),
    ("unicode_and_emoji", rec(turns=[h("<image>\nQu'est-ce que c'est ? 日本 🙂"), g("Un carré 🟥.")]), "ok"),
    ("cmyk_jpeg", rec(image="cmyk.jpg"), "ok"),
    ("sixteen_bit_png", rec(image="deep.png"), "ok"),
    ("palette_with_transparency", rec(image="palette.png"), "ok"),
    ("exif_rotated_jpeg", rec(image="rotated.jpg"), "ok"),
    ("rgba_png", rec(image="rgba.png"), "ok"),
    ("grayscale_png", rec(image="gray.png"), "ok"),
    ("animated_gif", rec(image="anim.gif"), "ok"),
    ("one_pixel_image", rec(image="dot.png"), "ok"),
    ("file_name_with_spaces_and_accents", rec(image="photo d'été.png"), "ok"),
    ("image_in_a_subfolder", rec(image="sub/ok.png"), "ok"),
    ("id_is_a_dict", rec(id={"a": 1}), "ok"),
    ("no_id_and_unknown_keys", {"image": "ok.png", "conversations": GOOD_TURNS, "source": {"x": [1]}}, "ok"),
    ("text_only", rec(image=None, turns=TEXT_TURNS), "ok"),
    ("image_token_at_the_end", rec(turns=[h("What is shown? <image>"), g("A square.")]), "ok"),
    ("image_token_added_when_absent", rec(turns=[h("What is shown?"), g("A square.")]), "ok"),
    ("roles_user_and_assistant", rec(turns=[{"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]), "ok"),
    ("multi_turn", rec(turns=[h("<image>\nq1"), g("a1"), h("q2"), g("a2"), h("q3"), g("a3")]), "ok"),
    ("long_answer_truncated", rec(turns=[h("<image>\nq"), g("word " * 600)]), "ok"),
]


def write_images(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(root / "ok.png")
    (root / "sub").mkdir(exist_ok=True)
    Image.new("RGB", (20, 20), (0, 0, 200)).save(root / "sub" / "ok.png")
    (root / "truncated.png").write_bytes((root / "ok.png").read_bytes()[:60])
    (root / "text.png").write_text("this is not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "folder.png").mkdir(exist_ok=True)
    Image.new("L", (200_000, 1)).save(root / "line.png")
    Image.new("L", (10_000, 10)).save(root / "strip.png")
    Image.new("L", (7_500, 750)).save(root / "wide.png")  # 5.6 Mpx, but 56 Mpx once padded to a square
    Image.new("CMYK", (30, 20), (0, 200, 0, 0)).save(root / "cmyk.jpg")
    Image.new("I;16", (30, 20), 40000).save(root / "deep.png")
    pal = Image.new("P", (30, 20), 1)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(root / "palette.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    Image.new("RGB", (40, 20), (0, 90, 0)).save(root / "rotated.jpg", exif=exif)
    Image.new("RGBA", (30, 20), (255, 0, 0, 128)).save(root / "rgba.png")
    Image.new("L", (30, 20), 128).save(root / "gray.png")
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (1, 1), (9, 9, 9)).save(root / "dot.png")
    Image.new("RGB", (30, 30), (50, 50, 50)).save(root / "photo d'été.png")


GOOD = json.dumps(rec())
FILES = [
    ("top_level_object", json.dumps({"data": [rec()]}), r"error:expected a JSON list or JSONL of records, got a top-level dict with keys \['data'\]"),
    ("top_level_string", json.dumps("records"), r"error:got a top-level str"),
    ("non_utf8", b'[{"id": 1, "conversations": "\xff\xfe"}]', r"error:not UTF-8 text \(invalid byte at offset 29\)"),
    ("empty_file", "", r"error:empty file"),
    ("whitespace_only", "\n \n", r"error:empty file"),
    ("json_syntax_error", "[\n" + GOOD + ",\n{,}\n]", r"error::3:2: not valid JSON"),
    ("jsonl_all_garbage", "hello\nworld\n", r"error::1: not valid JSON"),
    ("utf8_bom_json_list", b"\xef\xbb\xbf[" + GOOD.encode() + b"]", {}),
    ("jsonl_with_garbage_lines", GOOD + "\n{oops\n\n" + GOOD + "\n[1,\n", {"invalid_json_line": 2}),
    ("jsonl_in_a_json_file", GOOD + "\n" + GOOD + "\n", {}),
    ("list_with_non_objects", "[" + GOOD + ", 3, null, \"x\"]", {"not_an_object": 3}),
]


def png_bytes(size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, "PNG")
    return buf.getvalue()
