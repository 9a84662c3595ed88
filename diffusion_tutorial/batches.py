"""Which examples each training step sees: a reproducible order that resume can rejoin.

One epoch is a permutation of the n examples drawn from (seed, epoch), cut into global
batches of ``batch_size · world_size``; rank r takes slice r of each. So the batch at any
step is known without replaying the earlier ones: that is what lets a resumed run continue
with exactly the examples an uninterrupted run would see.

Two ways to deliver those batches, in the same order: :class:`StepBatchSampler` for a
DataLoader over any dataset, and :class:`DeviceBatches` for an in-memory
:class:`~diffusion_tutorial.data.ImageDataset` (mnist-sample, MNIST, Fashion-MNIST,
CIFAR-10), whose uint8 images are copied to the training device once and gathered and
scaled there, with no DataLoader and no copy per step. Chapter: Training.
"""
from __future__ import annotations

import functools

import torch
from torch.utils.data import Sampler

from .config import ConfigError
from .data import to_model_range


@functools.lru_cache(maxsize=2)
def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the n examples in ``epoch``: a permutation drawn from (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batch_position(n: int, batch_size: int, step: int, rank: int = 0,
                   world_size: int = 1) -> tuple[int, int]:
    """``(epoch, start)``: ``rank``'s batch at ``step`` (0-based) is
    ``epoch_permutation(n, seed, epoch)[start:start + batch_size]``."""
    global_batch = batch_size * world_size
    per_epoch = n // global_batch
    if per_epoch < 1:
        raise ConfigError(f"the dataset has {n} examples, fewer than one batch of {global_batch}: "
                          "lower batch_size.")
    epoch, k = divmod(step, per_epoch)
    return epoch, k * global_batch + rank * batch_size


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> list[int]:
    """The dataset indices of ``rank``'s batch at training step ``step`` (0-based)."""
    epoch, start = batch_position(n, batch_size, step, rank, world_size)
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


class DeviceBatches:
    """(x, y) for steps ``start .. end − 1`` from an :class:`~diffusion_tutorial.data.ImageDataset`
    held on ``device``: x float32 (B, C, H, W) in [−1, 1], y long (B,). Each epoch's order is
    copied to the device once; a batch is an index into the uint8 images there, scaled exactly
    as ``ImageDataset.__getitem__`` scales one image, so the batches equal the DataLoader's."""

    def __init__(self, dataset, device, batch_size, seed, start, end, rank=0, world_size=1):
        self.images = dataset.data.to(device)        # (N, C, H, W) uint8
        self.targets = dataset.targets.to(device)    # (N,)
        self.device = torch.device(device)
        self.args = (batch_size, seed, rank, world_size)
        self.start, self.end = start, end
        batch_position(len(self.images), batch_size, 0, rank, world_size)  # fail early

    def __iter__(self):
        batch_size, seed, rank, world_size = self.args
        n, epoch_on_device, order = len(self.images), None, None
        for step in range(self.start, self.end):
            epoch, start = batch_position(n, batch_size, step, rank, world_size)
            if epoch != epoch_on_device:
                order = epoch_permutation(n, seed, epoch).to(self.device)
                epoch_on_device = epoch
            idx = order[start:start + batch_size]
            yield to_model_range(self.images[idx].float() / 255), self.targets[idx]

    def __len__(self):
        return max(0, self.end - self.start)
