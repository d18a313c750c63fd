"""A seeded, resumable sampler that keeps samples with and without images in separate batches.

As LLaVA's modality-grouped sampler: within each modality, indices are shuffled, cut into
megabatches, sorted by length inside a megabatch, and cut into global batches
(`batch_size * num_replicas`); the global batches of both modalities are shuffled together and
each rank takes its slice of every global batch. The order depends on `seed` and the epoch only;
It yields whole batches (a batch sampler), so no batch straddles two modalities; `skip` makes the
next iteration start after the batches already consumed (resume).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


class ModalityGroupedBatchSampler(Sampler[list[int]]):
    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, shuffle: bool = True,
                 group_by_modality: bool = True, num_replicas: int = 1, rank: int = 0, megabatch_mult: int = 50):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_by_modality = group_by_modality
        self.num_replicas = num_replicas
        self.rank = rank
        self.megabatch_mult = megabatch_mult
        self.epoch = 0
        self._cache: tuple[int, list] | None = None  # (epoch, batches): len() and iter() share one shuffle
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches of this rank already consumed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load_state_dict(self, state: dict) -> None:
        """`{"epoch", "consumed"}`: the next iteration over that epoch starts after `consumed` batches."""
        self.epoch = state["epoch"]
        self.resume_at = (state["epoch"], state["consumed"])

    def _global_batches(self, g: torch.Generator) -> list[list[int]]:
        global_bs = self.batch_size * self.num_replicas
        n = len(self.lengths)
        if not self.shuffle:
            order = list(range(n))
            return [order[i:i + global_bs] for i in range(0, n, global_bs)]
        if not self.group_by_modality:
            order = torch.randperm(n, generator=g).tolist()
            return [order[i:i + global_bs] for i in range(0, n, global_bs)]
        batches = []
        for keep in (lambda x: x > 0, lambda x: x <= 0):
            idx = [i for i, length in enumerate(self.lengths) if keep(length)]
            if not idx:
                continue
            idx = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            mega = global_bs * self.megabatch_mult
            for start in range(0, len(idx), mega):
                chunk = sorted(idx[start:start + mega], key=lambda i: -abs(self.lengths[i]))
                batches += [chunk[i:i + global_bs] for i in range(0, len(chunk), global_bs)]
        order = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in order]

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch (before `skip`)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        out = []
        for batch in self._global_batches(g):
            if len(batch) < self.batch_size * self.num_replicas and self.num_replicas > 1:
                batch = (batch * math.ceil(self.batch_size * self.num_replicas / len(batch)))[: self.batch_size * self.num_replicas]
            out.append(batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size])
        self._cache = (self.epoch, out)
        return out

    def __iter__(self):
        # A generator: the resume position is read when the first batch is drawn, not when the
        # iterator is made (DeepSpeed's restore comes between the two).
        skip = self.resume_at[1] if self.resume_at and self.resume_at[0] == self.epoch else 0
        self.resume_at = None
        yield from self.batches()[skip:]

    def __len__(self) -> int:
        # The full epoch, also when resuming: the training loop's batch count stays that of the epoch.
        return len(self.batches())
