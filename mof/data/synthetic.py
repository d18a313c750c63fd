"""Synthetic visual-pattern pairs covering MMVP's nine patterns, drawn with PIL.

Each pair: two images that differ only in the asked attribute, one question, opposite answers.
Written to disk as LLaVA-format training files (captions for stage 1, questions for stage 2). The held-out
benchmark drawn from another seed stream is written by `mof.evaluation.benchmarks.synthetic`.

    python -m mof.data.synthetic --out DIR [--pairs-per-pattern 150] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from filelock import FileLock
from PIL import Image, ImageDraw, ImageFont

from ..atomic import replaced_folder
from ..errors import ConfigError, unknown
from .prompts import format_mcq_prompt
from .records import Source

COLORS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60), "yellow": (235, 200, 30),
          "purple": (140, 60, 180), "orange": (240, 130, 30), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle")
CAPTION_PROMPT = "Describe the image briefly."  # `plain` (stage 1) drops it; stage 2 tells captions from questions by it
# The questions' instruction: LLaVA-1.5's multiple-choice prompt, which evaluation appends too (a test keeps them equal).
BENCHMARK_SEED_OFFSET = 1_000_003  # the held-out benchmark's seed stream never shares a scene with training
PRETRAIN_SEED_OFFSET = 2_000_003  # nor do the encoders' pre-training images (mof.pretraining)
MINING_SEED_OFFSET = 3_000_003  # nor the miniature's pool of images to mine (mof.study)
BACKGROUND = (215, 255)  # a scene's flat background: each channel drawn from this range (nuisance, not an attribute)
JITTER = 0.12  # and its objects' centre: moved by up to this share of the image size each way (nuisance too)


@dataclass
class Scene:
    """The nuisance variables of a pair, shared by both of its images."""

    rng: random.Random
    size: int
    background: tuple
    color: str
    shape: str
    cx: float
    cy: float

    def canvas(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("RGB", (self.size, self.size), self.background)
        return img, ImageDraw.Draw(img)

    def s(self, v: float) -> float:
        return v * self.size / 64


def _shape(draw, shape, cx, cy, r, fill, outline=None, width=1):
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    elif shape == "square":
        draw.rectangle(box, fill=fill, outline=outline, width=width)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill, outline=outline, width=width)


# Each pattern: (draw(scene, value) -> image, question, (value_a, value_b), option texts, caption(scene, value)).
def _orientation(sc: Scene, v: str):
    img, d = sc.canvas()
    c = COLORS[sc.color]
    cx, cy, L = sc.size / 2, sc.size / 2, sc.s(22)
    sign = -1 if v == "left" else 1
    d.line([(cx - sign * L, cy), (cx + sign * L * 0.4, cy)], fill=c, width=max(2, int(sc.s(5))))
    tip = cx + sign * L
    d.polygon([(tip, cy), (tip - sign * sc.s(14), cy - sc.s(11)), (tip - sign * sc.s(14), cy + sc.s(11))], fill=c)
    return img


def _presence(sc: Scene, v: str):
    img, d = sc.canvas()
    r = sc.s(20)
    _shape(d, "circle", sc.cx, sc.cy, r, fill=COLORS[sc.color])
    if v == "yes":
        _shape(d, "circle", sc.cx, sc.cy, sc.s(7), fill=(255, 255, 255))
    return img


def _state(sc: Scene, v: str):
    img, d = sc.canvas()
    r = sc.s(14)
    if v == "on":
        for k in range(8):
            a = k * math.pi / 4
            d.line([(sc.cx + math.cos(a) * r * 1.2, sc.cy + math.sin(a) * r * 1.2),
                    (sc.cx + math.cos(a) * r * 1.9, sc.cy + math.sin(a) * r * 1.9)], fill=(250, 200, 0), width=2)
        _shape(d, "circle", sc.cx, sc.cy, r, fill=(255, 230, 60))
    else:
        _shape(d, "circle", sc.cx, sc.cy, r, fill=(90, 90, 90))
    return img


def _quantity(sc: Scene, v: str):
    img, d = sc.canvas()
    n = {"two": 2, "three": 3}[v]
    xs = [sc.size * (k + 1) / (n + 1) for k in range(n)]
    for x in xs:
        _shape(d, sc.shape, x, sc.cy, sc.s(5.5), fill=COLORS[sc.color])
    return img


def _position(sc: Scene, v: str):
    img, d = sc.canvas()
    left, right = sc.size * 0.27, sc.size * 0.73
    sq, ci = (left, right) if v == "left" else (right, left)
    _shape(d, "square", sq, sc.cy, sc.s(10), fill=COLORS["red"])
    _shape(d, "circle", ci, sc.cy, sc.s(10), fill=COLORS["blue"])
    return img


def _color(sc: Scene, v: str):
    img, d = sc.canvas()
    _shape(d, sc.shape, sc.cx, sc.cy, sc.s(18), fill=COLORS[v])
    return img


def _structure(sc: Scene, v: str):
    img, d = sc.canvas()
    y, w, c = sc.cy, max(2, int(sc.s(5))), COLORS[sc.color]
    x0, x1 = sc.s(6), sc.size - sc.s(6)
    if v == "solid":
        d.line([(x0, y), (x1, y)], fill=c, width=w)
    else:
        step = sc.s(10)
        x = x0
        while x < x1:
            d.line([(x, y), (min(x + step / 2, x1), y)], fill=c, width=w)
            x += step
    return img


_FONTS: dict = {}


def _font(px: int):
    if px not in _FONTS:
        try:
            _FONTS[px] = ImageFont.load_default(size=px)
        except TypeError:  # Pillow without FreeType
            _FONTS[px] = ImageFont.load_default()
    return _FONTS[px]


def _text(sc: Scene, v: str):
    img, d = sc.canvas()
    d.text((sc.cx, sc.cy), v, fill=COLORS[sc.color], font=_font(int(sc.s(40))), anchor="mm")
    return img


def _viewpoint(sc: Scene, v: str):
    img, d = sc.canvas()
    r = sc.s(26) if v == "close" else sc.s(8)
    _shape(d, sc.shape, sc.size / 2, sc.size / 2, r, fill=COLORS[sc.color])
    return img


@dataclass(frozen=True)
class Pattern:
    name: str
    draw: Callable
    question: str
    values: tuple
    options: tuple
    caption: Callable


PATTERNS = (
    Pattern("orientation and direction", _orientation, "Which way is the arrow pointing?", ("left", "right"),
            ("Left", "Right"), lambda sc, v: f"A {sc.color} arrow pointing {v}."),
    Pattern("presence of specific features", _presence, "Is there a white dot inside the circle?", ("yes", "no"),
            ("Yes", "No"), lambda sc, v: f"A {sc.color} circle {'with' if v == 'yes' else 'without'} a white dot."),
    Pattern("state and condition", _state, "Is the lamp on or off?", ("on", "off"), ("On", "Off"),
            lambda sc, v: f"A lamp that is {v}."),
    Pattern("quantity and count", _quantity, "How many shapes are there?", ("two", "three"), ("Two", "Three"),
            lambda sc, v: f"{v.capitalize()} {sc.color} {sc.shape}s in a row."),
    Pattern("positional and relational context", _position, "Is the red square to the left or right of the blue circle?",
            ("left", "right"), ("Left", "Right"), lambda sc, v: f"A red square to the {v} of a blue circle."),
    Pattern("color and appearance", _color, "What color is the shape?", ("red", "blue"), ("Red", "Blue"),
            lambda sc, v: f"A {v} {sc.shape}."),
    Pattern("structural and physical characteristics", _structure, "Is the line solid or dashed?", ("solid", "dashed"),
            ("Solid", "Dashed"), lambda sc, v: f"A {v} {sc.color} line."),
    Pattern("text", _text, "Which letter is shown?", ("A", "B"), ("A", "B"), lambda sc, v: f"The letter {v} in {sc.color}."),
    Pattern("viewpoint and perspective", _viewpoint, "Is the shape seen from close up or from far away?",
            ("close", "far"), ("Close up", "Far away"), lambda sc, v: f"A {sc.color} {sc.shape} seen from {'close up' if v == 'close' else 'far away'}."),
)
PATTERN_NAMES = tuple(p.name for p in PATTERNS)


# Captions are "web-like": they name an image's object and only the properties in `captioned` (the tiny CLIP's
# config choice, `mof/conf/encoder/clip.yaml`). A property captions never mention is one CLIP has no reason to keep, as
# on the web, where alt text says "a red arrow" and rarely which way it points. Nothing downstream reads
# `captioned`: the miniature measures what the encoder learnt, not what it was told.
# The property each pattern varies, by the name `captioned` uses.
PROPERTY = dict(zip((p.name for p in PATTERNS), ("orientation", "presence", "state", "quantity", "position", "color",
                                                 "structure", "text", "viewpoint")))
PROPERTIES = tuple(PROPERTY.values())
# The scene attributes each pattern draws besides its property (the colour pattern's colour is its property).
DRAWN = {"orientation": ("color",), "presence": ("color",), "state": (), "quantity": ("color", "shape"),
         "position": (), "color": ("shape",), "structure": ("color",), "text": ("color",),
         "viewpoint": ("color", "shape")}


def caption(attrs: dict, captioned) -> str:
    """The caption of an image drawn with `attrs`, naming the properties in `captioned` (and `color`, `shape` where
    drawn, if captioned). With every property captioned it is the image's full description (MMVP-VLM's statement)."""
    v, named = attrs["value"], set(captioned)
    prop = PROPERTY[attrs["pattern"]]
    color = f"{v if prop == 'color' else attrs.get('color')} " if "color" in named else ""
    shape = attrs.get("shape", "shape") if "shape" in named else "shape"
    says = prop in named
    if prop == "orientation":
        return f"a {color}arrow" + (f" pointing {v}" if says else "")
    if prop == "presence":
        return f"a {color}circle" + ((" with a white dot" if v == "yes" else " without a white dot") if says else "")
    if prop == "state":
        return "a lamp" + (f" that is {v}" if says else "")
    if prop == "quantity":
        return f"{v if says else 'some'} {color}{shape}s in a row"
    if prop == "position":
        return "a square and a circle" + (f", the square on the {v}" if says else "")
    if prop == "color":
        return f"a {color}{shape}"
    if prop == "structure":
        return f"a {v + ' ' if says else ''}{color}line"
    if prop == "text":
        return (f"the letter {v}" if says else "a letter") + (f" in {attrs['color']}" if "color" in named else "")
    return f"a {color}{shape}" + ((" seen from close up" if v == "close" else " seen from far away") if says else "")


def _scene(rng: random.Random, size: int, pattern: Pattern) -> Scene:
    bg = tuple(rng.randint(*BACKGROUND) for _ in range(3))
    colors = [c for c in COLORS if c not in ("yellow",)]
    jitter = size * JITTER
    return Scene(rng, size, bg, rng.choice(colors), rng.choice(SHAPES),
                 size / 2 + rng.uniform(-jitter, jitter), size / 2 + rng.uniform(-jitter, jitter))


def make_images(scenes_per_pattern: int, seed: int, size: int = 64):
    """Yield `(image, attributes)` for both values of `scenes_per_pattern` scenes of every pattern (the two images of
    a scene differ only in the pattern's property): what encoders are pre-trained on (`mof.pretraining`) and what
    the miniature mines. Attributes: `pattern`, `value`, and the scene's `color` / `shape` where the pattern draws
    them (`DRAWN`); background tint and position jitter are nuisance, not attributes."""
    rng = random.Random(seed)
    for _ in range(scenes_per_pattern):
        for pattern in PATTERNS:
            sc = _scene(rng, size, pattern)
            drawn = {k: getattr(sc, k) for k in DRAWN[PROPERTY[pattern.name]]}
            for v in pattern.values:
                yield pattern.draw(sc, v), {"pattern": pattern.name, "value": v, **drawn}


def make_pairs(pairs_per_pattern: int, seed: int, size: int = 64, shuffle_options: bool = False):
    """Yield `(pattern, [(image, caption, answer_letter), (image, caption, answer_letter)], options_text)`."""
    rng = random.Random(seed)
    for k in range(pairs_per_pattern):
        for pattern in PATTERNS:
            sc = _scene(rng, size, pattern)
            flip = rng.random() < 0.5 and shuffle_options  # which option is listed first
            opts = pattern.options[::-1] if flip else pattern.options
            vals = pattern.values[::-1] if flip else pattern.values
            options_text = f"(a) {opts[0]} (b) {opts[1]}"
            items = []
            for j, v in enumerate(pattern.values):
                letter = "(a)" if vals[0] == v else "(b)"
                items.append((pattern.draw(sc, v), pattern.caption(sc, v), letter))
            yield pattern, items, options_text


def checked_question_share(share, key: str = "data.synthetic.question_share") -> dict:
    """`{property: share}` (None: {}), each a property some pattern varies and a share in [0, 1]."""
    if share is not None and not isinstance(share, Mapping):
        raise ConfigError(f"{key}: expected {{property: share}} (e.g. {{orientation: 0.1}}) or null, got {share!r}")
    share = dict(share or {})
    for prop, s in share.items():
        if prop not in PROPERTIES:
            raise ConfigError(unknown(key, "property", prop, PROPERTIES))
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1:
            raise ConfigError(f"{key}.{prop}: expected a share between 0 and 1, got {s!r}")
    return share


def write_training_set(out: Path, pairs_per_pattern: int, seed: int, size: int, shuffle_options: bool,
                       question_share: dict | None = None) -> dict:
    """Every image with its caption; and the question pairs (one scene's two images) of each property kept with
    its probability in `question_share` (default 1), drawn once per pair from a stream of their own, so the
    images and captions are the same whatever the shares."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    share = question_share or {}   # checked by `generate`
    ask = random.Random(f"questions-{seed}")
    captions, questions = [], []
    n = 0
    for pattern, items, options in make_pairs(pairs_per_pattern, seed, size, shuffle_options):
        asked = ask.random() < share.get(PROPERTY[pattern.name], 1.0)
        for img, caption, letter in items:
            name = f"{n:06d}.png"
            img.save(images / name)
            captions.append({"id": f"cap-{n}", "image": name,
                             "conversations": [{"from": "human", "value": "<image>\n" + CAPTION_PROMPT},
                                               {"from": "gpt", "value": caption}]})
            if asked:
                questions.append({"id": f"qa-{n}", "image": name, "pattern": pattern.name, "conversations": [
                    {"from": "human", "value": "<image>\n" + question_text(pattern.question, options)},
                    {"from": "gpt", "value": letter}]})
            n += 1
    (out / "captions.json").write_text(json.dumps(captions))
    (out / "instruct.json").write_text(json.dumps(questions))
    return {"images": n, "captions": len(captions), "questions": len(questions)}


def question_text(question: str, options: str) -> str:
    return format_mcq_prompt(question, options)


def write_once(out: str | Path, spec: dict, write: Callable[[Path], dict]) -> Path:
    """Call `write(folder)` unless `out` already holds a complete set made from `spec`. One process writes it while
    the others starting together (ranks, a study's runs side by side) wait on a lock beside it, then find it
    complete; it is built in a private folder and renamed into place, so that no reader ever sees half a set.
    (Without the lock, each process built its own and a late one removed the set another was reading.)"""
    out = Path(out)
    if _complete(out, spec):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(out.with_name(f".{out.name}.lock")):
        if _complete(out, spec):  # another process made it while this one waited
            return out
        with replaced_folder(out) as tmp:   # an older or different set is replaced once this one is whole
            summary = write(tmp)
            (tmp / "COMPLETE.json").write_text(json.dumps({"spec": spec, **summary}, indent=1))
    return out


def written(out: str | Path) -> dict:
    """What `write` returned when `write_once` made `out`."""
    made = json.loads((Path(out) / "COMPLETE.json").read_text())
    return {k: v for k, v in made.items() if k != "spec"}


def generation_spec(defaults: dict, options: dict, key: str = "benchmark.synthetic") -> dict:
    """`defaults` updated by the options that are set; an option `defaults` lacks is an error naming `key`."""
    spec = {**defaults, **{k: v for k, v in options.items() if v is not None}}
    unknown = set(spec) - set(defaults)
    if unknown:
        raise ConfigError(f"{key}: unknown keys {sorted(unknown)}; expected {sorted(defaults)}")
    return spec


def _complete(out: Path, spec: dict) -> bool:
    marker = out / "COMPLETE.json"
    return marker.exists() and json.loads(marker.read_text()).get("spec") == spec


def generate(out: str | Path, pairs_per_pattern: int = 150, seed: int = 0, size: int = 64,
             shuffle_options: bool = False, question_share: dict | None = None) -> Path:
    """Write the training set (images, `captions.json`, `instruct.json`) under `out`, unless already there.

    shuffle_options: list each pair's two options in random order (harder: the answer letter then
    depends on the option order as well as the image); by default the order of the pattern's values.
    question_share: `{property: share}`, the share of the question pairs about that property that are kept (the
    others: all); e.g. instruction data that, like LLaVA's, rarely asks which way things point (`data=synthetic_rare`).
    """
    share = checked_question_share(question_share)
    spec = {"pairs_per_pattern": pairs_per_pattern, "seed": seed, "size": size, "shuffle_options": shuffle_options,
            "version": 3, **({"question_share": share} if share else {})}   # the sets made before it keep their spec
    return write_once(out, spec, lambda d: {"train": write_training_set(d, pairs_per_pattern, seed, size,
                                                                        shuffle_options, share)})


def sources(out: str | Path, template: str) -> list[Source]:
    """The synthetic datasets a template trains on: captions always; the questions except with `plain` (stage 1
    keeps only the image and the answer of a turn, so a question would lose its text)."""
    out = Path(out)
    chosen = ([] if template == "plain" else [out / "instruct.json"]) + [out / "captions.json"]
    return [Source(str(p), str(out / "images")) for p in chosen]


def corpus() -> list[str]:
    """Every text the synthetic data can produce (for training the tiny tokenizer)."""
    texts = []
    for pattern in PATTERNS:
        for a, b in (pattern.options, pattern.options[::-1]):
            texts.append(question_text(pattern.question, f"(a) {a} (b) {b}"))
        for color in COLORS:
            for shape in SHAPES:
                sc = Scene(random.Random(0), 64, (0, 0, 0), color, shape, 0, 0)
                texts += [pattern.caption(sc, v) for v in pattern.values]
    return texts + ["(a)", "(b)", CAPTION_PROMPT]


PROG = "python -m mof.data.synthetic"  # the usage line says the command a user types, not the file name


def main():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--pairs-per-pattern", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    out = generate(a.out, a.pairs_per_pattern, a.seed, a.size)
    print((out / "COMPLETE.json").read_text())


if __name__ == "__main__":
    main()
