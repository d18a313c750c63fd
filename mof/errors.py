"""`MofError`: the base of every error about the user's input (config, data, checkpoint, benchmark files). Entry
points print its one-line message and exit with status 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import sys


class MofError(Exception):
    pass


def exit_with(error: MofError, status: int = 2):
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(status)
