"""Small helpers shared by every module: device choice, seeding, quick mode.

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

import numpy as np
import torch

QUICK_ENV = "DIFFUSION_TUTORIAL_QUICK"


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Return ``device``, resolving ``"auto"`` to CUDA, then MPS, then CPU."""
    if isinstance(device, torch.device):
        return device
    if device != "auto":
        return torch.device(device)
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
