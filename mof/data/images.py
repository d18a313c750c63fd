"""Image decoding and per-encoder preprocessing (PIL + numpy; no torchvision).

`MofImageProcessor` turns one image into one pixel tensor per encoder, each with the encoder's own
size and normalisation, and is saved beside an exported model as `preprocessor_config.json`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from ..errors import ConfigError

PROCESSOR_FILE = "preprocessor_config.json"
MAX_ENCODER_SIDE = 4096   # an encoder's input side; the largest in use are ~1k (ConvNeXt in Cambrian), so a
# `preprocessor_config.json` asking for more is refused before it sizes a tensor from a few bytes of JSON


class ImageError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (RGBA, LA, P, L, 1, CMYK, I;16, I, F) to 8-bit RGB; transparency over white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def check_size(path, width: int, height: int, max_pixels: int, max_aspect_ratio: float, padded: bool) -> None:
    """Refuse, before anything is allocated, an image whose decoded or padded size exceeds `max_pixels` or whose
    sides differ more than `max_aspect_ratio` times."""
    if width < 1 or height < 1:
        raise ImageError("bad_image", f"{path} is {width}x{height}")
    side = max(width, height)
    pixels = side * side if padded else width * height
    if pixels > max_pixels:
        raise ImageError("image_too_large", f"{path} is {width}x{height}{' (padded to a square)' if padded else ''}: "
                                            f"{pixels} pixels, limit {max_pixels}")
    if side / min(width, height) > max_aspect_ratio:
        raise ImageError("image_too_large", f"{path} is {width}x{height}: aspect ratio above {max_aspect_ratio}")


def load_image(path: str | Path, max_pixels: int = 50_000_000, max_aspect_ratio: float = 100.0,
               padded: bool = False) -> Image.Image:
    """Decode fully (so truncated files fail here, not later), apply EXIF orientation, convert to RGB."""
    path = Path(path)
    if not path.is_file():
        raise ImageError("missing_image", str(path))
    return decode_image(path, path, max_pixels, max_aspect_ratio, padded)


def decode_image(source, name, max_pixels: int = 50_000_000, max_aspect_ratio: float = 100.0,
                 padded: bool = False) -> Image.Image:
    """`load_image` of a path or a binary file object (a tar member's bytes); `name` is what messages call it. The
    size is checked from the header, before anything is decoded: memory is bounded by the limits, not the file."""
    path = name
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        with Image.open(source) as img:
            check_size(path, img.width, img.height, max_pixels, max_aspect_ratio, padded)
            # PIL's switch is module-wide, and libraries set it on import (lmms-eval's task module does): a file cut
            # short would decode with its missing rows grey. mof reads it as what it is, a bad image.
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError("bad_image", f"{path}: {e}") from e
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def check_encoder_settings(e, key: str) -> None:
    """One encoder's `{size, mean, std}`: a side in [1, MAX_ENCODER_SIDE], three means, three positive stds."""
    if not isinstance(e, dict) or set(e) != {"size", "mean", "std"}:
        raise ConfigError(f"{key}: expected the keys size, mean, std, got {e!r}"[:300])
    size = e["size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_ENCODER_SIDE:
        raise ConfigError(f"{key}.size: expected an integer side in [1, {MAX_ENCODER_SIDE}], got {size!r}")
    for name, positive in (("mean", False), ("std", True)):
        v = e[name]
        if (not isinstance(v, list) or len(v) != 3
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
                or (positive and not all(x > 0 for x in v))):
            raise ConfigError(f"{key}.{name}: expected three finite{' positive' if positive else ''} numbers, got {v!r}")


@dataclass
class EncoderTransform:
    size: int
    mean: list
    std: list

    def __call__(self, img: Image.Image, mode: str) -> torch.Tensor:
        if mode == "pad":
            img = expand_to_square(img, tuple(int(m * 255) for m in self.mean))  # LLaVA: int(x * 255), not rounded
        if mode == "crop":
            img = resize_shortest_edge_and_crop(img, self.size)
        else:
            img = img.resize((self.size, self.size), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def resize_shortest_edge_and_crop(img: Image.Image, size: int) -> Image.Image:
    """CLIPImageProcessor's default (LLaVA-1.5 stage 1): the shortest side to `size` (bicubic), the longer one
    scaled and truncated to an integer, then the centre `size` x `size` crop."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    img = img.resize((new_short, new_long) if w <= h else (new_long, new_short), Image.BICUBIC)
    top, left = (img.height - size) // 2, (img.width - size) // 2
    return img.crop((left, top, left + size, top + size))


def expand_to_square(img: Image.Image, fill: tuple) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new("RGB", (side, side), fill)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


@dataclass
class MofImageProcessor:
    """Per-encoder pixel preparation.

    mode: `pad` (square, filled with the encoder's mean colour, then resized: LLaVA-1.5's `image_aspect_ratio=pad`),
        `crop` (shortest side resized, centre crop: CLIPImageProcessor's default, LLaVA-1.5 stage 1) or `resize`.
        EXIF orientation and compositing transparency over white happen first (LLaVA does neither: deliberate).
    share_first: every encoder receives the first encoder's pixels (the paper's released code fed
        DINOv2 the CLIP-prepared image); otherwise each gets its own size and normalisation.
    """

    encoders: list = field(default_factory=list)  # [{"size", "mean", "std"}]
    mode: str = "pad"
    share_first: bool = False
    max_pixels: int = 50_000_000
    max_aspect_ratio: float = 100.0

    def __post_init__(self):
        if self.mode not in ("pad", "crop", "resize"):
            raise ConfigError(f"image processor mode: expected 'pad', 'crop' or 'resize', got {self.mode!r}")
        if not isinstance(self.encoders, list) or not self.encoders:
            raise ConfigError(f"image processor encoders: expected a list of {{size, mean, std}}, got {self.encoders!r}")
        for k, e in enumerate(self.encoders):
            check_encoder_settings(e, f"image processor encoders[{k}]")
        for key, value in (("max_pixels", self.max_pixels), ("max_aspect_ratio", self.max_aspect_ratio)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"image processor {key}: expected a positive number, got {value!r}")
        self._transforms = [EncoderTransform(**e) for e in self.encoders]

    @classmethod
    def from_model_config(cls, config, mode: str = "pad", share_first: bool = False) -> "MofImageProcessor":
        specs = config.encoder_specs
        encoders = [{"size": s.image_size, "mean": list(s.image_mean), "std": list(s.image_std)} for s in specs]
        if share_first and len({e["size"] for e in encoders}) > 1:
            raise ConfigError("image processor share_first: every encoder must take the same image size")
        return cls(encoders, mode, share_first)

    def check_fits(self, config, source) -> "MofImageProcessor":
        """Refuse a processor whose sizes are not the model's encoders' (a folder whose parts do not belong
        together would feed every image at the wrong size)."""
        want = [s.image_size for s in config.encoder_specs]
        have = [e["size"] for e in self.encoders]
        if have != want:
            raise ConfigError(f"{source}: image sizes {have}; the model's encoders take {want}")
        return self

    def __call__(self, img: Image.Image) -> list[torch.Tensor]:
        if self.share_first:
            first = self._transforms[0](img, self.mode)
            return [first] * len(self._transforms)
        cache = {}  # encoders with identical transforms share one computation
        out = []
        for t in self._transforms:
            key = (t.size, tuple(t.mean), tuple(t.std))
            if key not in cache:
                cache[key] = t(img, self.mode)
            out.append(cache[key])
        return out

    def load(self, path) -> list[torch.Tensor]:
        return self(load_image(path, self.max_pixels, self.max_aspect_ratio, padded=self.mode == "pad"))

    def save_pretrained(self, directory) -> None:
        d = asdict(self)
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / PROCESSOR_FILE).write_text(json.dumps({"processor_class": "MofImageProcessor", **d}, indent=1))

    @classmethod
    def for_model(cls, settings, config, source) -> "MofImageProcessor":
        """The processor stored with a model (`settings`, from its checkpoint; None: the model's own), checked to be
        one (`from_dict`) and to fit the model (`check_fits`); `source` names where `settings` came from."""
        if settings is None:
            return cls.from_model_config(config)
        return cls.from_dict(settings, source).check_fits(config, source)

    @classmethod
    def from_pretrained(cls, directory) -> "MofImageProcessor":
        """The processor saved in `directory`; a file that is not one (a folder from elsewhere) is one error naming
        it and what was expected."""
        path = Path(directory) / PROCESSOR_FILE
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not a readable JSON image processor ({e})") from e
        return cls.from_dict(d, path)

    @classmethod
    def from_dict(cls, d, source) -> "MofImageProcessor":
        """The processor that `d` (a saved processor's settings) describes; `source` names where `d` came from."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected an image processor's settings (an object), got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k != "processor_class"}
        extra = sorted(set(d) - set(cls.__dataclass_fields__))
        if extra:
            raise ConfigError(f"{source}: unknown keys {extra}; expected {sorted(cls.__dataclass_fields__)}")
        try:
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
