"""Torch's CPU thread count, pinned for one run. Torch splits a sum among its threads, so the order in which floats
are added, and with it the last bits of every result, depends on the thread count; torch's default is one thread per
core. A run that pins the count computes the same numbers on any core count of the same kind of machine (the tiny
preset's `model.threads`, `pretrain.yaml`'s `threads`)."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def pinned_threads(threads: int | None):
    """Torch's intra-op threads set to `threads` (None: left as they are) inside the block, and restored after it."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
