"""`MofError`: the base of every error about the user's input (config, data, checkpoint, benchmark files). Entry
points print its one-line message and exit with status 2; anything else is a bug and keeps its traceback.

`refuse_finished`: the one rule by which training, evaluation and mining keep a finished run's outputs."""

from __future__ import annotations

import difflib
import functools
import os
import shutil
import sys
from pathlib import Path


class MofError(Exception):
    pass


class ConfigError(MofError, ValueError):
    """A wrong value in a run's configuration; the message names its key."""


class FinishedRunError(MofError):
    """An output folder already holds a finished run, and nothing said to continue or replace it."""


def unknown(key: str, what: str, name, known) -> str:
    """The message for a name no registry holds: the known names, and the nearest one when there is one."""
    known = list(known)
    near = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"{key}: unknown {what} {name!r}{hint}; known: {', '.join(known)}"


def exit_with(error: MofError, status: int = 2):
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(status)


def one_line_errors(body):
    """An entry point's body, run so that an error about the user's input is one line on stderr, exit status 2."""
    @functools.wraps(body)
    def run(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except MofError as e:
            exit_with(e)
    return run


def is_secondary_rank() -> bool:
    """A process that a launcher started beside rank 0 (Lightning, torchrun, SLURM set these): rank 0 guards."""
    return any(int(os.environ.get(k, "0") or 0) > 0 for k in ("LOCAL_RANK", "RANK", "NODE_RANK"))


def refuse_finished(folder: str | Path, outputs: list[str], overwrite: bool, how_to_continue: str = "") -> None:
    """Refuse to write into `folder` when any of `outputs` (names inside it) exists: the same command run twice
    must not replace a finished run's results. `overwrite=true` removes those outputs first, knowingly."""
    folder = Path(folder)
    found = [name for name in outputs if (folder / name).exists()]
    if not found or is_secondary_rank():
        return
    if not overwrite:
        alternatives = f"{how_to_continue}, or " if how_to_continue else ""
        raise FinishedRunError(f"{folder} already holds a finished run ({', '.join(found)}): {alternatives}pass "
                               "overwrite=true to replace it, or choose another hydra.run.dir")
    for name in found:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
