"""Where the images come from: a folder (recursive), a text file of paths, a LLaVA-format JSON/JSONL (its `image`
fields), or webdataset tar shards (img2dataset's layout for LAION), read by streaming `tarfile`; and the run's list
of them, written once a shard at a time (`ImageList`), which everything after the listing reads instead of holding
the collection's names in memory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from PIL import Image

from ..atomic import write_file
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


def iter_images(spec: str, image_root: str | None = None) -> Iterator[ImageRef]:
    """Every image `spec` names, in a stable order, one at a time: memory holds one folder's entries or one tar's
    members, never the collection (a LLaVA JSON is read whole, as training reads it)."""
    path = Path(spec)
    if path.is_dir():  # the images of its .tar shards, then the image files under it
        for tar in sorted(path.glob("*.tar")):
            yield from _tar_images(tar)
        yield from _walk(path)
        return
    if not path.is_file():
        raise SourceError(f"images: {spec} is neither a folder nor a file; expected a folder, a .txt of paths, a "
                          "LLaVA .json/.jsonl, or .tar shards")
    if path.suffix == ".tar":
        yield from _tar_images(path)
    elif path.suffix == ".txt":
        yield from _text_images(path, image_root or path.parent)
    elif path.suffix in (".json", ".jsonl"):
        yield from _llava_images(path, Path(image_root) if image_root else path.parent)
    else:
        raise SourceError(f"images: {spec}: expected a folder, a .txt of paths, a LLaVA .json/.jsonl or a .tar shard")


def list_images(spec: str, image_root: str | None = None) -> list[ImageRef]:
    """`iter_images` as a list (small collections and tests)."""
    return list(iter_images(spec, image_root))


def writable_name(ref: ImageRef) -> bool:
    """An image whose name is not valid UTF-8 (a file system hands it over with escaped bytes) cannot be written into
    pairs.csv or review.html, so it is skipped and counted before anything is embedded."""
    try:
        ref.id.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def recent(cache: OrderedDict, key, load, size: int):
    """`cache[key]`, loaded with `load(key)` when absent; the `size` most recently used are kept."""
    if key not in cache:
        cache[key] = load(key)
        while len(cache) > size:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ImageList:
    """The images of a run, listed once into `folder/NNNNN.json` a shard at a time (each image's id, its file, and
    its offset and size inside a tar): embedding reads its shards from it, and the outputs look images up in it.
    Memory holds the last few shards read (`cache`), never the collection's names (10M names as Python objects
    took 1.88 GiB). `keys[s]` is the hash of shard s's ordered ids (what makes an embedded shard reusable)."""

    def __init__(self, folder: Path, sizes: list[int], keys: list[str], ids_sha256: str, set_aside: int = 0,
                 first_set_aside: str | None = None, cache: int = 8):
        self.folder, self.sizes, self.keys, self.ids_sha256 = Path(folder), sizes, keys, ids_sha256
        self.set_aside, self.first_set_aside, self.cache = set_aside, first_set_aside, cache
        self._read: OrderedDict[int, dict[str, ImageRef]] = OrderedDict()

    @classmethod
    def write(cls, refs: Iterable[ImageRef], folder: Path, shard_size: int) -> ImageList:
        """List `refs` into `folder`, `shard_size` a file, leaving out (and counting) names that are not UTF-8. A
        file that already holds the same list is left as it is (every rank of a run lists the same images)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sizes, keys, whole = [], [], hashlib.sha256()
        aside = {"n": 0, "first": None}

        def kept():
            for ref in refs:
                if writable_name(ref):
                    yield ref
                else:
                    aside["n"] += 1
                    aside["first"] = aside["first"] or ref.id

        stream = kept()
        while chunk := list(islice(stream, shard_size)):
            ids = "\n".join(r.id for r in chunk)
            whole.update((("\n" if sizes else "") + ids).encode())
            text = json.dumps([[r.id, r.path, r.offset, r.size] for r in chunk]).encode()
            path = folder / f"{len(sizes):05d}.json"
            if not (path.is_file() and path.read_bytes() == text):
                write_file(path, lambda f, text=text: f.write(text))
            sizes.append(len(chunk))
            keys.append(_sha(ids))
        return cls(folder, sizes, keys, whole.hexdigest(), aside["n"], aside["first"])

    def __len__(self) -> int:
        return sum(self.sizes)

    def __getstate__(self):   # what a data loader worker is sent: the folder and the sizes, not the cache
        return {**self.__dict__, "_read": OrderedDict()}

    def by_id(self, shard: int) -> dict[str, ImageRef]:
        """Shard `shard`'s images by id, in listed order (the last `cache` shards read are kept)."""
        return recent(self._read, shard, lambda s: {r.id: r for r in self.shard(s)}, self.cache)

    def shard(self, shard: int) -> list[ImageRef]:
        rows = json.loads((self.folder / f"{shard:05d}.json").read_text(encoding="utf-8"))
        return [ImageRef(i, p, o, n) for i, p, o, n in rows]


def _resolve(p: str, root) -> Path:
    return Path(p) if Path(p).is_absolute() else Path(root) / p


def _walk(folder: Path) -> Iterator[ImageRef]:
    """The image files under `folder` in `sorted(folder.rglob("*"))`'s order (by path component), one folder's
    entries in memory at a time; links to folders are not followed."""
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            yield from _walk(Path(e.path))
        elif Path(e.name).suffix.lower() in IMAGE_SUFFIXES:
            yield ImageRef(e.path, e.path)


def _text_images(path: Path, root) -> Iterator[ImageRef]:
    """One image path a line, read a line at a time."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise SourceError(f"{path}:{n}: not UTF-8 text (byte {e.start} of the line); expected one image path "
                                  "per line") from None
            if line:
                yield ImageRef(line, str(_resolve(line, root)))


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
