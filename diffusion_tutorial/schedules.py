"""Noise schedules: the variances β_t of the forward process and what follows from them.

Time indexing (used by the whole package). The paper's time runs t = 1..T. Tensors are
indexed 0..T-1, and **index i holds the value for paper time t = i + 1**: ``betas[0]`` is
β_1 and ``alphas_cumprod[T-1]`` is ᾱ_T. Functions that take a timestep tensor ``t``
take this 0-based index. Chapter: The forward process.

Schedules are computed in float64 (products of 1,000 numbers close to 1 lose precision in
float32) and converted to float32 where they are stored as buffers.
"""
from __future__ import annotations

import math

import torch

SCHEDULES = ("linear", "cosine")


def _check_timesteps(timesteps: int) -> None:
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps <= 0:
        raise ValueError(f"timesteps (T) must be a positive integer, got {timesteps!r}.")


def check_betas(betas: torch.Tensor) -> torch.Tensor:
    """Validate a β schedule: a 1-D tensor with every β_t in the open interval (0, 1)."""
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.ndim != 1 or betas.numel() == 0:
        raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}.")
    if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
        raise ValueError(
            "every beta_t must lie in the open interval (0, 1); got values from "
            f"{betas.min().item():.4g} to {betas.max().item():.4g}."
        )
    return betas


def linear_beta_schedule(
    timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """β_t rising linearly from ``beta_start`` (t=1) to ``beta_end`` (t=T), as in DDPM
    (Ho et al. 2020, section 4: β_1 = 1e-4 ... β_T = 0.02 for T = 1000). float64, shape (T,)."""
    _check_timesteps(timesteps)
    return check_betas(torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64))


def cosine_alphas_cumprod(timesteps: int = 1000, s: float = 0.008) -> torch.Tensor:
    """ᾱ_t = f(t)/f(0), f(t) = cos²(((t/T) + s)/(1 + s) · π/2), for t = 0..T (shape (T+1,)).

    Nichol & Dhariwal 2021 ("Improved DDPM"), eq. 17. Index 0 is ᾱ_0 = 1."""
    _check_timesteps(timesteps)
    t = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos(((t / timesteps) + s) / (1 + s) * math.pi / 2) ** 2
    return f / f[0]


def cosine_beta_schedule(
    timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999
) -> torch.Tensor:
    """β_t = 1 − ᾱ_t/ᾱ_{t−1} from the cosine ᾱ_t, clipped to at most ``max_beta``
    (Improved DDPM, section 3.2). float64, shape (T,)."""
    abar = cosine_alphas_cumprod(timesteps, s)
    betas = 1 - abar[1:] / abar[:-1]
    return check_betas(betas.clamp(max=max_beta))


def make_betas(schedule: str = "linear", timesteps: int = 1000, beta_start: float = 1e-4,
               beta_end: float = 0.02) -> torch.Tensor:
    """β schedule by name, float64, shape (T,): ``"linear"`` from ``beta_start`` to
    ``beta_end`` (:func:`linear_beta_schedule`) or ``"cosine"`` (:func:`cosine_beta_schedule`,
    which has no β_1 or β_T to set and ignores them)."""
    if schedule == "linear":
        return linear_beta_schedule(timesteps, beta_start, beta_end)
    if schedule == "cosine":
        return cosine_beta_schedule(timesteps)
    raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}.")


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = ∏_{s≤t} (1 − β_s), computed in float64."""
    return torch.cumprod(1 - torch.as_tensor(betas, dtype=torch.float64), dim=0)


def snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t)."""
    return alphas_cumprod / (1 - alphas_cumprod)
