"""Where the images come from: a folder (recursive), a text file of paths, a LLaVA-format JSON/JSONL (its `image`
fields), or webdataset tar shards (img2dataset's layout for LAION), read by streaming `tarfile`."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..data.images import ImageError, decode_image
from ..data.records import load_json_records
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
        """Decoded as training decodes (EXIF orientation, alpha over white, size limits before decoding). For the
        outputs of images already embedded: one that is gone or changed since is a one-line error."""
        try:
            return decode_image(io.BytesIO(self.read_bytes()), self.id)
        except (OSError, ImageError) as e:
            raise SourceError(f"images: {self.id} cannot be read any more ({e}); was it moved or replaced since "
                              "it was embedded?") from None


def list_images(spec: str, image_root: str | None = None) -> list[ImageRef]:
    """Every image `spec` names, in a stable order."""
    path = Path(spec)
    if path.is_dir():  # read whole: the images of its .tar shards, then the image files in it
        tars = [ref for tar in sorted(path.glob("*.tar")) for ref in _tar_images(tar)]
        return tars + [ImageRef(str(p), str(p)) for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not path.is_file():
        raise SourceError(f"images: {spec} is neither a folder nor a file; expected a folder, a .txt of paths, a "
                          "LLaVA .json/.jsonl, or .tar shards")
    if path.suffix == ".tar":
        return _tar_images(path)
    if path.suffix == ".txt":
        lines = [x.strip() for x in _text(path).splitlines() if x.strip()]
        return [ImageRef(p, str(_resolve(p, image_root or path.parent))) for p in lines]
    if path.suffix in (".json", ".jsonl"):
        return _llava_images(path, Path(image_root) if image_root else path.parent)
    raise SourceError(f"images: {spec}: expected a folder, a .txt of paths, a LLaVA .json/.jsonl or a .tar shard")


def without_unwritable_names(refs: list[ImageRef]) -> tuple[list[ImageRef], list[ImageRef]]:
    """`(kept, set aside)`: an image whose name is not valid UTF-8 (a file system hands it over with escaped bytes)
    cannot be written into pairs.csv or review.html, so it is skipped and counted before anything is embedded."""
    kept, aside = [], []
    for ref in refs:
        try:
            ref.id.encode("utf-8")
            kept.append(ref)
        except UnicodeEncodeError:
            aside.append(ref)
    return kept, aside


def _resolve(p: str, root) -> Path:
    return Path(p) if Path(p).is_absolute() else Path(root) / p


def _text(path: Path, encoding: str = "utf-8") -> str:
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 text (byte {e.start}); expected one image path per line") from None


def _tar_images(tar_path: Path) -> list[ImageRef]:
    try:
        with tarfile.open(tar_path) as tar:
            every = list(tar)
        with open(tar_path, "rb") as f:   # tarfile stops quietly at a cut header: the archive's end says it is whole
            f.seek(every[-1].offset_data + -(-every[-1].size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE if every else 0)
            end = f.read(2 * tarfile.BLOCKSIZE)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SourceError(f"{tar_path}: not a readable tar shard ({type(e).__name__}: {' '.join(str(e).split())})") from None
    if end != bytes(2 * tarfile.BLOCKSIZE):
        raise SourceError(f"{tar_path}: cut short or damaged after member {every[-1].name if every else '(none)'!r} "
                          f"({len(every)} members read); expected a whole tar shard (copy it again)")
    members = [m for m in every if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES]
    counts = Counter(m.name for m in members)
    repeated = [name for name, n in counts.items() if n > 1]
    if repeated:  # an image's id is shard/name: two members of one name would share it
        raise SourceError(f"{tar_path}: member {repeated[0]!r} appears {counts[repeated[0]]} times; each image in a "
                          "shard needs its own name")
    return [ImageRef(f"{tar_path.name}/{m.name}", str(tar_path), m.offset_data, m.size) for m in members]


def _llava_images(path: Path, root: Path) -> list[ImageRef]:
    """The images a LLaVA-format file names (read by training's reader; records need no conversation here)."""
    records, _ = load_json_records(path)
    seen, refs = set(), []
    for r in records:
        image = r.get("image") if isinstance(r, dict) else None
        if isinstance(image, str) and image not in seen:
            seen.add(image)
            refs.append(ImageRef(image, str(root / image)))
    return refs
