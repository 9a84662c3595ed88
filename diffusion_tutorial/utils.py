"""Small helpers shared by every module: device choice, seeding, quick mode, timestep
checking and timing.

Quick mode is the one switch that shrinks sizes and step counts so that every
notebook and the default ``train`` run in minutes on a laptop CPU. It is read from
the environment variable ``DIFFUSION_TUTORIAL_QUICK``:

* ``1`` / ``true`` / ``yes``  -> quick mode on,
* ``0`` / ``false`` / ``no``  -> quick mode off (full size),
* unset or ``auto``           -> on when no CUDA GPU is present, off otherwise.
"""
from __future__ import annotations

import os
import random
import statistics
import time
from typing import Optional

import numpy as np
import torch

QUICK_ENV = "DIFFUSION_TUTORIAL_QUICK"


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Return ``device``, resolving ``"auto"`` to CUDA, then MPS, then CPU."""
    if isinstance(device, torch.device):
        return device
    if device != "auto":
        try:
            device = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps.") from None
        count = torch.cuda.device_count() if device.type == "cuda" else 0
        mps = getattr(torch.backends, "mps", None)
        if device.type == "cuda" and (device.index or 0) >= count:
            found = f"only {count} CUDA GPU(s)" if count else "no CUDA GPU"
        elif device.type == "mps" and not (mps is not None and mps.is_available()):
            found = "no Apple MPS device"
        else:
            return device
        raise ValueError(f"device {str(device)!r} is not available here ({found}): "
                         "use --device auto (device='auto') or cpu.")
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded alike."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def quick_mode() -> bool:
    """Whether the book and default runs should use small sizes (see module docstring)."""
    value = os.environ.get(QUICK_ENV, "auto").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    if value not in {"", "auto"}:
        raise ValueError(
            f"{QUICK_ENV}={value!r} is not understood: use 1 (quick), 0 (full) or auto."
        )
    return not torch.cuda.is_available()


def as_timestep_tensor(t, batch: int, device=None, num_timesteps: Optional[int] = None) -> torch.Tensor:
    """Turn ``t`` (an int, or a tensor of shape (B,)) into a (B,) tensor on ``device``.

    Networks and the diffusion process all take either one timestep for the whole batch or
    one per example. With ``num_timesteps`` (T) the result is a long tensor of 0-based
    indices, checked to lie in 0..T−1 (index i is paper time t = i + 1, see
    :mod:`diffusion_tutorial.schedules`); without it the dtype is kept."""
    t = torch.as_tensor(t, device=device)
    if num_timesteps is not None:
        t = t.long()
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be an int or a ({batch},) tensor of timestep indices, "
                         f"got shape {tuple(t.shape)}.")
    if num_timesteps is not None:
        message = (f"timestep index out of range: t must be in 0..{num_timesteps - 1} "
                   "(0-based; index i is paper time t = i + 1).")
        inside = (t >= 0) & (t < num_timesteps)
        if t.is_cpu:
            if not inside.all():
                raise ValueError(message)
        else:  # on a GPU, reading the answer back would stall every training step
            torch._assert_async(inside.all(), message)
    return t


def wall_times(fn, repeats: int, warmup: int = 1, device=None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn()``, after ``warmup`` untimed calls
    (memory allocation, kernel selection). On a CUDA ``device`` the GPU is synchronised
    before and after each timed call, so queued kernels are counted in the call that
    launched them."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}.")
    cuda = device is not None and torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median_time(fn, repeats: int = 3, warmup: int = 1, device=None) -> float:
    """The median of :func:`wall_times`: a time per call that one slow call (another job
    on a shared machine) does not move."""
    return statistics.median(wall_times(fn, repeats, warmup, device))
