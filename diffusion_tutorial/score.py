"""The score view of diffusion: scores from ε, and Langevin sampling.

The score of a density p is s(x) = ∇_x log p(x). For the diffusion marginals the noise
predictor already is a score model (Song et al. 2021, eq. 6 and appendix; NOTATION.md):

    ∇_{x_t} log q(x_t | x_0) = −ε / √(1 − ᾱ_t),   so   s_θ(x_t, t) = −ε_θ(x_t, t) / √(1 − ᾱ_t).

Given any score, unadjusted Langevin dynamics draws approximate samples of p:

    x ← x + (δ/2) ∇_x log p(x) + √δ · z,   z ~ N(0, I)            (Welling & Teh 2011; ULA)

and annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) runs it at a
decreasing sequence of noise levels σ_1 > ... > σ_L, with step δ_i = δ · σ_i² / σ_L², so
that the chain finds the modes while the density is smooth and sharpens them as the
noise falls. Here the noise levels are diffusion timesteps: level t uses the score of
the marginal q_t and σ_t = √(1 − ᾱ_t). Chapter: The score view.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .diffusion import GaussianDiffusion, randn_like
from .utils import as_timestep_tensor

ScoreFn = Callable[..., torch.Tensor]


def model_score(model, diffusion: GaussianDiffusion, y=None, guidance_scale: float = 1.0) -> ScoreFn:
    """Wrap an ε-model as a score function ``score_fn(x, t)`` = −ε_θ(x, t) / √(1 − ᾱ_t)
    (:meth:`GaussianDiffusion.score_from_eps`); ``t`` is an int or a (B,) tensor of
    0-based indices."""
    def score_fn(x: torch.Tensor, t) -> torch.Tensor:
        t = as_timestep_tensor(t, x.shape[0], x.device, diffusion.num_timesteps)
        eps = diffusion.predict_eps(model, x, t, y, guidance_scale)
        return diffusion.score_from_eps(x, t, eps)
    return score_fn


def gaussian_score(mean: torch.Tensor, cov: torch.Tensor) -> ScoreFn:
    """The exact score of N(mean, cov): s(x) = −Σ⁻¹ (x − μ). mean: (D,), cov: (D, D).
    Returns ``score_fn(x)`` for x of shape (B, D)."""
    precision = torch.linalg.inv(cov)

    def score_fn(x: torch.Tensor, *_) -> torch.Tensor:
        return -(x - mean) @ precision.T  # (B, D)
    return score_fn


@torch.no_grad()
def langevin_sample(score_fn: ScoreFn, x_init: torch.Tensor, step_size: float, n_steps: int,
                    generator: Optional[torch.Generator] = None, return_trajectory: bool = False,
                    trajectory_keep: int = 50, progress: bool = False):
    """Unadjusted Langevin dynamics with a fixed step δ = ``step_size``:

        x_{k+1} = x_k + (δ/2) s(x_k) + √δ · z_k,   z_k ~ N(0, I),

    with ``score_fn(x)`` = ∇ log p(x). For small δ and many steps x_K is distributed
    close to p (the bias grows with δ). Returns x_K, or ``(x_K, trajectory)`` where the
    trajectory holds about ``trajectory_keep`` evenly spaced states, x_0 first."""
    if step_size <= 0 or n_steps < 0:
        raise ValueError(f"step_size must be > 0 and n_steps >= 0, got {step_size}, {n_steps}.")
    x = x_init.clone()
    every = max(1, n_steps // max(1, trajectory_keep))
    trajectory = [x.cpu()] if return_trajectory else None
    for k in tqdm(range(n_steps), desc="Langevin", disable=not progress, leave=False):
        x = x + 0.5 * step_size * score_fn(x) + step_size ** 0.5 * randn_like(x, generator)
        if return_trajectory and (k + 1) % every == 0:
            trajectory.append(x.cpu())
    return (x, trajectory) if return_trajectory else x


def diffusion_noise_levels(diffusion: GaussianDiffusion, n_levels: int,
                           spacing: str = "geometric") -> tuple[list[int], torch.Tensor]:
    """``n_levels`` distinct timestep indices from T−1 down to 0 and their noise scales
    σ_t = √(1 − ᾱ_t): the annealing schedule for :func:`annealed_langevin_sample`.

    ``spacing="geometric"`` picks the steps whose σ_t are closest to a geometric sequence
    from σ_{T} to σ_1 (as Song & Ermon 2019 space their σ_i), which puts more levels at
    low noise, where the modes sharpen; ``"linear"`` spaces the indices evenly."""
    T = diffusion.num_timesteps
    if not 1 <= n_levels <= T:
        raise ValueError(f"n_levels must be between 1 and T={T}, got {n_levels}.")
    all_sigmas = diffusion.sqrt_one_minus_alphas_cumprod.detach().cpu().double()  # (T,)
    if spacing == "linear":
        levels = torch.linspace(T - 1, 0, n_levels).round().long()
    elif spacing == "geometric":
        targets = torch.logspace(all_sigmas[-1].log10().item(), all_sigmas[0].log10().item(),
                                 n_levels, dtype=torch.float64)  # σ_max .. σ_min
        levels = (all_sigmas.log()[None, :] - targets.log()[:, None]).abs().argmin(1)
    else:
        raise ValueError(f"spacing must be 'geometric' or 'linear', got {spacing!r}.")
    levels = sorted(set(levels.tolist()), reverse=True)  # distinct, noisiest first
    return levels, all_sigmas[torch.tensor(levels)].float()


@torch.no_grad()
def annealed_langevin_sample(score_fn: ScoreFn, x_init: torch.Tensor, levels: Sequence,
                             sigmas: Sequence[float], step_size: float, n_steps_each: int,
                             generator: Optional[torch.Generator] = None,
                             return_trajectory: bool = False, progress: bool = False):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each level i (from the noisiest), with step δ_i = ``step_size`` · σ_i² / σ_L²:
    run ``n_steps_each`` Langevin steps x ← x + (δ_i/2) s(x, level_i) + √δ_i · z.

    ``score_fn(x, level)`` is the score of the density at that level, e.g.
    :func:`model_score` or ``lambda x, t: mixture.score(x, t, diffusion)`` with
    levels from :func:`diffusion_noise_levels`. Returns the final x, or
    ``(x, trajectory)`` with the state after each level (x_init first)."""
    if len(levels) != len(sigmas) or len(levels) == 0:
        raise ValueError("levels and sigmas must be non-empty and of the same length.")
    if step_size <= 0 or n_steps_each < 1:
        raise ValueError(f"step_size must be > 0 and n_steps_each >= 1, got {step_size}, {n_steps_each}.")
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    x = x_init.clone()
    trajectory = [x.cpu()] if return_trajectory else None
    for level, sigma in tqdm(list(zip(levels, sigmas)), desc="annealed Langevin",
                             disable=not progress, leave=False):
        delta = step_size * float(sigma / sigmas[-1]) ** 2  # δ_i = ε σ_i² / σ_L²
        for _ in range(n_steps_each):
            x = x + 0.5 * delta * score_fn(x, level) + delta ** 0.5 * randn_like(x, generator)
        if return_trajectory:
            trajectory.append(x.cpu())
    return (x, trajectory) if return_trajectory else x
