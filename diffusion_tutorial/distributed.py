"""Multi-process data-parallel training with ``torchrun``.

``torchrun --nproc_per_node=N -m diffusion_tutorial train ...`` starts N copies of the
trainer and sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``. Each copy (rank) trains on
its own shard of every step's batch; :class:`~torch.nn.parallel.DistributedDataParallel`
averages the gradients, so all copies keep identical weights. Only rank 0 writes logs,
sample grids and checkpoints. The backend is NCCL on CUDA GPUs and gloo on CPUs.
Without ``torchrun`` (``WORLD_SIZE`` unset) everything here is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .utils import get_device


@dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Optional[torch.device] = None
    owns_group: bool = False           # we created the process group and must destroy it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if there is one; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=get_device(device))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and str(device) in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu") if str(device) == "auto" else torch.device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return DistInfo(rank, world_size, local_rank, dev, owns)


def cleanup(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of ``values`` over all ranks (the tensor itself without torchrun)."""
    if not info.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / info.world_size


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` under torchrun; the model itself otherwise.
    DDP copies rank 0's initial weights to every rank."""
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device is not None and info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
