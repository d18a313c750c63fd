"""Writing files and folders so that a reader, or a run killed halfway, never finds half of one: everything is written
under a private name beside its place and renamed into it (`os.replace`, atomic on one file system)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def write_file(path: str | Path, write: Callable) -> None:
    """`write(f)` into a binary file beside `path`, then renamed onto it: `path` is the old file or the new one whole
    (a `write` that raises leaves the old one, and no file beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        return True
    return True


@contextmanager
def replaced_folder(out: str | Path) -> Iterator[Path]:
    """An empty private folder beside `out` to write into; when the block ends, it takes `out`'s place (an older
    `out` is moved aside first and removed after). `out` is either the folder it was or the new one whole, except
    for the instant between those two renames (a folder cannot be renamed onto a full one): a block that raises, or
    a process killed in it, leaves `out` as it was. Private folders that killed processes left beside `out` are
    removed here."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for left in out.parent.glob(f".{out.name}.partial-*"):
        pid = left.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    aside = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    if out.exists():
        os.replace(out, aside)
    os.replace(partial, out)
    shutil.rmtree(aside, ignore_errors=True)
