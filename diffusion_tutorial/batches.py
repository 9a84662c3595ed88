"""Which examples each training step sees: a reproducible order that resume can rejoin.

One epoch is a permutation of the n examples drawn from (seed, epoch), cut into global
batches of ``batch_size · world_size``; rank r takes slice r of each. So the batch at any
step is known without replaying the earlier ones: that is what lets a resumed run continue
with exactly the examples an uninterrupted run would see. Chapter: The loss and training.
"""
from __future__ import annotations

import functools

import torch
from torch.utils.data import Sampler

from .config import ConfigError


@functools.lru_cache(maxsize=2)
def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the n examples in ``epoch``: a permutation drawn from (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> list[int]:
    """The dataset indices of ``rank``'s batch at training step ``step`` (0-based)."""
    global_batch = batch_size * world_size
    per_epoch = n // global_batch
    if per_epoch < 1:
        raise ConfigError(f"the dataset has {n} examples, fewer than one batch of {global_batch}: "
                          "lower batch_size.")
    epoch, k = divmod(step, per_epoch)
    start = k * global_batch + rank * batch_size
    return epoch_permutation(n, seed, epoch)[start:start + batch_size].tolist()


class StepBatchSampler(Sampler):
    """Yields :func:`batch_indices` for steps ``start .. end - 1``."""

    def __init__(self, n, batch_size, seed, start, end, rank=0, world_size=1):
        self.args = (n, batch_size, seed, rank, world_size)
        self.start, self.end = start, end

    def __iter__(self):
        n, b, seed, rank, ws = self.args
        for step in range(self.start, self.end):
            yield batch_indices(n, b, step, seed, rank, ws)

    def __len__(self):
        return max(0, self.end - self.start)
