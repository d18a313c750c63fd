"""Where the images come from: a folder (recursive), a text file of paths, a LLaVA-format JSON/JSONL (its `image`
fields), or webdataset tar shards (img2dataset's layout for LAION), read by streaming `tarfile`."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import MofError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class SourceError(MofError, ValueError):
    pass


@dataclass(frozen=True)
class ImageRef:
    """An image by its id (its path, or `shard.tar/member`); inside a shard, `offset` and `size` locate its bytes,
    so reading one never scans the tar's headers again."""

    id: str
    path: str
    offset: int | None = None
    size: int | None = None

    def read_bytes(self) -> bytes:
        if self.offset is None:
            return Path(self.path).read_bytes()
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)

    def open(self) -> Image.Image:
        img = Image.open(io.BytesIO(self.read_bytes()))
        img.load()
        return img.convert("RGB")


def list_images(spec: str, image_root: str | None = None) -> list[ImageRef]:
    """Every image `spec` names, in a stable order."""
    path = Path(spec)
    if path.is_dir():
        tars = sorted(path.glob("*.tar"))
        if tars:
            return [ref for tar in tars for ref in _tar_images(tar)]
        return [ImageRef(str(p), str(p)) for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not path.is_file():
        raise SourceError(f"images: {spec} is neither a folder nor a file; expected a folder, a .txt of paths, a "
                          "LLaVA .json/.jsonl, or .tar shards")
    if path.suffix == ".tar":
        return _tar_images(path)
    if path.suffix == ".txt":
        lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        return [ImageRef(p, str(_resolve(p, image_root or path.parent))) for p in lines]
    if path.suffix in (".json", ".jsonl"):
        return _llava_images(path, Path(image_root) if image_root else path.parent)
    raise SourceError(f"images: {spec}: expected a folder, a .txt of paths, a LLaVA .json/.jsonl or a .tar shard")


def _resolve(p: str, root) -> Path:
    return Path(p) if Path(p).is_absolute() else Path(root) / p


def _tar_images(tar_path: Path) -> list[ImageRef]:
    with tarfile.open(tar_path) as tar:
        return [ImageRef(f"{tar_path.name}/{m.name}", str(tar_path), m.offset_data, m.size) for m in tar
                if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES]


def _llava_images(path: Path, root: Path) -> list[ImageRef]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        records = [json.loads(x) for x in text.splitlines() if x.strip()] if path.suffix == ".jsonl" else json.loads(text)
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    seen, refs = set(), []
    for r in records if isinstance(records, list) else []:
        image = r.get("image") if isinstance(r, dict) else None
        if isinstance(image, str) and image not in seen:
            seen.add(image)
            refs.append(ImageRef(image, str(root / image)))
    return refs
