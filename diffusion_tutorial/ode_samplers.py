"""Samplers that solve the probability-flow ODE: DPM-Solver++(2M) and Heun's method.

Song et al. 2021 ("Score-Based Generative Modeling through SDEs", eq. 13) show that the
deterministic probability-flow ODE moves samples through the same marginals q(x_t) as the
noisy reverse process. In the variables of Karras et al. 2022 ("Elucidating the Design
Space of Diffusion-Based Generative Models", EDM, eq. 1 and table 1),

    x̂ = x_t / √ᾱ_t,   σ_t = √(1 − ᾱ_t) / √ᾱ_t,   x̂ = x_0 + σ ε,

the ODE is dx̂/dσ = (x̂ − D(x̂; σ)) / σ = ε_θ, where D = x̂_0 is the network's clean-image
estimate. One Euler step of it, x̂' = x̂ + (σ' − σ) ε_θ, is exactly DDIM with η = 0 (Song,
Meng, Ermon 2021, section 4.3); the solvers here take better steps along the same ODE:

* **Heun** (EDM Algorithm 1, deterministic, no churn): an Euler step to σ', a second slope
  there, and the step redone with the average slope; 2 network evaluations per step
  (1 for the last step, to σ = 0, which stays Euler).
* **DPM-Solver++(2M)** (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
  Diffusion Probabilistic Models", Algorithm 2): the ODE written for the data prediction
  x̂_0 in λ = log(√ᾱ/√(1 − ᾱ)), its linear part solved exactly, and x̂_0 extrapolated
  linearly in λ from the last two steps; 1 evaluation per step.
* **SDE-DPM-Solver++(2M)**, its stochastic variant (same paper, the solver of the reverse
  SDE): part of the signal is replaced by fresh noise at each step. Its first-order step is
  DDIM with η = 1, so it is to DDIM η = 1 what DPM-Solver++(2M) is to DDIM η = 0.

Both take a :class:`~diffusion_tutorial.diffusion.GaussianDiffusion` and any model of its
``prediction`` type, visit integer timesteps (the network was trained on those), and end
at σ = 0. Chapter: Faster: what to predict, how to weight, how to solve.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from tqdm.auto import tqdm

from .diffusion import GaussianDiffusion, Model, randn_like
from .samplers import _start, ddim_timesteps


def solver_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` decreasing 0-based indices for DPM-Solver++: ``steps + 1`` evenly spaced
    points from T−1 to 0, rounded, without the last (diffusers' "linspace" spacing); the
    solver then steps from the smallest of them to σ = 0."""
    if not 1 <= steps < num_timesteps:
        raise ValueError(f"steps must be between 1 and T-1={num_timesteps - 1}, got {steps}.")
    seq = torch.linspace(0, num_timesteps - 1, steps + 1, dtype=torch.float64).round().long()
    return seq.flip(0)[:-1].tolist()


def _a_s(diffusion: GaussianDiffusion, t: int) -> tuple[float, float]:
    """(√ᾱ_t, √(1 − ᾱ_t)) as float64 numbers; index −1 is the clean end (1, 0)."""
    if t < 0:
        return 1.0, 0.0
    abar = diffusion._alphas_cumprod64[t]
    return math.sqrt(abar), math.sqrt(1 - abar)


def _denoise(diffusion, model, x_t, t: int, y, guidance_scale, clip_denoised):
    """x̂_0 at integer index ``t`` for the whole batch, clipped to [−1, 1] if asked."""
    tt = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    x0 = diffusion.predict_x0(model, x_t, tt, y, guidance_scale)
    return x0.clamp(-1, 1) if clip_denoised else x0


def dpm_solver_2m_step(diffusion: GaussianDiffusion, x_t: torch.Tensor, t: int, t_prev: int,
                       x0: torch.Tensor, x0_before: Optional[torch.Tensor] = None,
                       t_before: Optional[int] = None,
                       noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One DPM-Solver++(2M) step from index ``t`` to ``t_prev`` < t (−1: to x_0), given the
    data prediction ``x0`` at t and, for the second-order update, ``x0_before`` at the
    previous (larger) index ``t_before``:

        h = λ_prev − λ_t,   λ = log(√ᾱ / √(1 − ᾱ)),
        D = x0                                             (first order: DDIM, η = 0)
        D = (1 + 1/(2r)) x0 − 1/(2r) x0_before,   r = (λ_t − λ_before) / h   (second order)
        x_prev = (σ_prev/σ_t) x_t − √ᾱ_prev (e^{−h} − 1) D

    (Lu et al. 2022, Algorithm 2, with σ here meaning √(1 − ᾱ)). With ``noise`` z, the
    stochastic (SDE) variant instead:

        x_prev = (σ_prev/σ_t) e^{−h} x_t + √ᾱ_prev (1 − e^{−2h}) D + σ_prev √(1 − e^{−2h}) z.

    At t_prev = −1, σ_prev = 0 and h = ∞, so x_prev = D; that step is taken first-order,
    as in the paper's final step."""
    if not -1 <= t_prev < t < diffusion.num_timesteps:
        raise ValueError(f"need -1 <= t_prev < t <= {diffusion.num_timesteps - 1}, got t={t}, "
                         f"t_prev={t_prev} (0-based indices; -1 means x_0).")
    a_t, s_t = _a_s(diffusion, t)
    a_p, s_p = _a_s(diffusion, t_prev)
    if t_prev < 0:
        return x0
    lam_t, lam_p = math.log(a_t / s_t), math.log(a_p / s_p)
    h = lam_p - lam_t
    d = x0
    if x0_before is not None:
        if t_before is None or t_before <= t:
            raise ValueError(f"t_before must be the larger index of the previous step, got {t_before}.")
        a_b, s_b = _a_s(diffusion, t_before)
        r = (lam_t - math.log(a_b / s_b)) / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_before
    if noise is None:
        return (s_p / s_t) * x_t - a_p * math.expm1(-h) * d
    return (s_p / s_t * math.exp(-h)) * x_t - a_p * math.expm1(-2 * h) * d + \
        s_p * math.sqrt(-math.expm1(-2 * h)) * noise


@torch.no_grad()
def dpm_solver_sample(diffusion: GaussianDiffusion, model: Model, shape, *, steps: int = 20,
                      y=None, guidance_scale: float = 1.0,
                      generator: Optional[torch.Generator] = None, device=None,
                      x_T: Optional[torch.Tensor] = None, clip_denoised: bool = False,
                      stochastic: bool = False, progress: bool = True) -> torch.Tensor:
    """DPM-Solver++(2M) from x_T ~ N(0, I) to x_0 in ``steps`` network evaluations along
    :func:`solver_timesteps`: predict x̂_0, take :func:`dpm_solver_2m_step` (first order
    for the first and the last step, second order between). Deterministic, or with
    ``stochastic`` the SDE variant, whose fresh noise comes from ``generator``."""
    device = device or diffusion.betas.device
    x = _start(shape, device, generator, x_T)
    schedule = solver_timesteps(diffusion.num_timesteps, steps)
    x0_before = t_before = None
    name = "SDE-DPM-Solver++(2M)" if stochastic else "DPM-Solver++(2M)"
    for i, t in enumerate(tqdm(schedule, desc=f"{name} ({steps} steps)",
                               disable=not progress, leave=False)):
        t_prev = schedule[i + 1] if i + 1 < len(schedule) else -1
        x0 = _denoise(diffusion, model, x, t, y, guidance_scale, clip_denoised)
        noise = randn_like(x, generator) if stochastic and t_prev >= 0 else None
        x = dpm_solver_2m_step(diffusion, x, t, t_prev, x0, x0_before, t_before, noise)
        x0_before, t_before = x0, t
    return x


def heun_step(diffusion: GaussianDiffusion, denoise, x_t: torch.Tensor, t: int, t_next: int,
              x0: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One Heun step (EDM Algorithm 1, lines 5-8) from index ``t`` to ``t_next`` < t
    (−1: to σ = 0), in x̂ = x_t/√ᾱ_t with slope d = (x̂ − x̂_0)/σ:

        x̂' = x̂ + (σ_next − σ) d(x̂, σ);   x̂_next = x̂ + (σ_next − σ) (d(x̂, σ) + d(x̂', σ_next)) / 2,

    the correction skipped when σ_next = 0. ``denoise(x_t, t)`` returns x̂_0 at an integer
    index; ``x0`` is its value at (x_t, t) if already computed. Returns x_{t_next}."""
    a, s = _a_s(diffusion, t)
    a_n, s_n = _a_s(diffusion, t_next)
    sigma, sigma_n = s / a, s_n / a_n
    x_hat = x_t / a
    x0 = denoise(x_t, t) if x0 is None else x0
    d = (x_hat - x0) / sigma
    x_hat_n = x_hat + (sigma_n - sigma) * d                   # Euler (= DDIM, η = 0)
    if t_next >= 0:
        d_n = (x_hat_n - denoise(a_n * x_hat_n, t_next)) / sigma_n
        x_hat_n = x_hat + (sigma_n - sigma) * (d + d_n) / 2  # trapezoid: Heun's correction
    return a_n * x_hat_n


@torch.no_grad()
def heun_sample(diffusion: GaussianDiffusion, model: Model, shape, *, steps: int = 10,
                y=None, guidance_scale: float = 1.0, generator: Optional[torch.Generator] = None,
                device=None, x_T: Optional[torch.Tensor] = None, clip_denoised: bool = False,
                progress: bool = True) -> torch.Tensor:
    """Heun's method on the probability-flow ODE from x_T to x_0 along the ``steps``
    timesteps of :func:`~diffusion_tutorial.samplers.ddim_timesteps` and then to σ = 0:
    2·steps − 1 network evaluations. Deterministic."""
    device = device or diffusion.betas.device
    x = _start(shape, device, generator, x_T)
    schedule = ddim_timesteps(diffusion.num_timesteps, steps)

    def denoise(x_t, t):
        return _denoise(diffusion, model, x_t, t, y, guidance_scale, clip_denoised)

    for i, t in enumerate(tqdm(schedule, desc=f"Heun ({steps} steps)", disable=not progress,
                               leave=False)):
        t_next = schedule[i + 1] if i + 1 < len(schedule) else -1
        x = heun_step(diffusion, denoise, x, t, t_next)
    return x


def evaluations(sampler: str, steps: int, num_timesteps: int = 1000) -> int:
    """Network evaluations per sample of ``sampler`` with ``steps`` steps (no guidance)."""
    if sampler == "ddpm":
        return num_timesteps
    if sampler == "heun":
        return 2 * steps - 1
    return steps
