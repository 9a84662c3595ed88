"""Sampling loops: ancestral DDPM and DDIM, each reading as "predict the noise, take a step".

Both take a :class:`~diffusion_tutorial.diffusion.GaussianDiffusion`, any ε-predicting
callable ``model(x_t, t)`` (or ``model(x_t, t, y)`` with labels), and a shape, and start
from x_T ~ N(0, I). Chapter: Sampling.
"""
from __future__ import annotations

from typing import Optional

import torch
from tqdm.auto import tqdm

from .diffusion import GaussianDiffusion, Model, randn_like


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """An evenly spaced, decreasing sub-sequence of ``steps`` 0-based indices from
    T−1 down to 0 (Song et al. 2021, section 4.2, "linear" τ)."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be between 1 and T={num_timesteps}, got {steps}.")
    seq = torch.linspace(0, num_timesteps - 1, steps).round().long().tolist()
    return sorted(set(seq), reverse=True)


def _start(shape, device, generator, x_T):
    if x_T is not None:
        return x_T.to(device)
    return randn_like(torch.empty(shape, device=device), generator)


def _trajectory_steps(schedule: list[int], keep: Optional[int]) -> set[int]:
    if keep is None or keep >= len(schedule):
        return set(schedule)
    idx = torch.linspace(0, len(schedule) - 1, keep).round().long().tolist()
    return {schedule[i] for i in idx}


@torch.no_grad()
def ddpm_sample(diffusion: GaussianDiffusion, model: Model, shape, *, y=None,
                guidance_scale: float = 1.0, generator: Optional[torch.Generator] = None,
                device=None, x_T: Optional[torch.Tensor] = None, clip_denoised: bool = False,
                return_trajectory: bool = False, trajectory_keep: Optional[int] = None,
                progress: bool = True):
    """Ancestral sampling (DDPM Algorithm 2): x_T ~ N(0, I); for t = T..1,
    x_{t−1} = μ_θ(x_t, t) + σ_t z, with z = 0 at the last step.

    With ``return_trajectory`` returns ``(x_0, trajectory)`` where trajectory is a list
    of ``(t_index, x_t, pred_x0)`` triples, from x_T to x_0 (``trajectory_keep`` frames
    evenly spaced, or every step)."""
    device = device or diffusion.betas.device
    x = _start(shape, device, generator, x_T)
    schedule = list(range(diffusion.num_timesteps - 1, -1, -1))
    keep = _trajectory_steps(schedule, trajectory_keep)
    trajectory = [(diffusion.num_timesteps, x.cpu(), None)] if return_trajectory else None
    for i in tqdm(schedule, desc="DDPM sampling", disable=not progress, leave=False):
        t = torch.full((x.shape[0],), i, device=device, dtype=torch.long)
        out = diffusion.p_sample(model, x, t, y=y, generator=generator,
                                 guidance_scale=guidance_scale, clip_denoised=clip_denoised)
        x = out["sample"]
        if return_trajectory and i in keep:
            trajectory.append((i, x.cpu(), out["pred_x0"].cpu()))
    return (x, trajectory) if return_trajectory else x


@torch.no_grad()
def ddim_sample(diffusion: GaussianDiffusion, model: Model, shape, *, steps: int = 50,
                eta: float = 0.0, y=None, guidance_scale: float = 1.0,
                generator: Optional[torch.Generator] = None, device=None,
                x_T: Optional[torch.Tensor] = None, clip_denoised: bool = False,
                return_trajectory: bool = False, progress: bool = True):
    """DDIM sampling (Song, Meng, Ermon 2021) along ``steps`` evenly spaced timesteps:
    x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1} − σ_t²) ε_θ + σ_t z. η = 0 is deterministic:
    the same x_T always gives the same x_0."""
    device = device or diffusion.betas.device
    x = _start(shape, device, generator, x_T)
    schedule = ddim_timesteps(diffusion.num_timesteps, steps)
    trajectory = [(diffusion.num_timesteps, x.cpu(), None)] if return_trajectory else None
    for i, t_idx in enumerate(tqdm(schedule, desc=f"DDIM sampling ({steps} steps)",
                                   disable=not progress, leave=False)):
        t_prev = schedule[i + 1] if i + 1 < len(schedule) else -1
        t = torch.full((x.shape[0],), t_idx, device=device, dtype=torch.long)
        eps = diffusion.predict_eps(model, x, t, y, guidance_scale)
        x = diffusion.ddim_step(x, t_idx, t_prev, eps, eta=eta, generator=generator,
                                clip_denoised=clip_denoised)
        if return_trajectory:
            trajectory.append((t_idx, x.cpu(), diffusion.predict_x0_from_eps(
                trajectory[-1][1].to(device), t, eps).cpu()))
    return (x, trajectory) if return_trajectory else x


SAMPLERS = ("ddpm", "ddim", "dpm++2m", "dpm++2m-sde", "heun")
# The default of `python -m diffusion_tutorial sample` and of the grids training writes.
DEFAULT_SAMPLER = "dpm++2m-sde"


def sample(diffusion: GaussianDiffusion, model: Model, shape, *, sampler: str = "ddpm",
           steps: Optional[int] = None, eta: float = 0.0, **kwargs):
    """Dispatch to :func:`ddpm_sample` (``steps`` must be None or T), :func:`ddim_sample`
    (``steps`` default 50), or the ODE solvers of :mod:`diffusion_tutorial.ode_samplers`:
    ``"dpm++2m"`` (DPM-Solver++(2M), default 20 steps), ``"dpm++2m-sde"`` (its stochastic
    variant) and ``"heun"`` (default 10 steps, 2·steps − 1 network evaluations). ``eta`` is
    DDIM's only."""
    if sampler == "ddpm":
        if steps not in (None, diffusion.num_timesteps):
            raise ValueError(
                f"the DDPM sampler runs all T={diffusion.num_timesteps} steps; "
                "use --sampler ddim for fewer steps.")
        return ddpm_sample(diffusion, model, shape, **kwargs)
    if sampler == "ddim":
        return ddim_sample(diffusion, model, shape, steps=steps or 50, eta=eta, **kwargs)
    if sampler in ("dpm++2m", "dpm++2m-sde", "heun"):
        from .ode_samplers import dpm_solver_sample, heun_sample
        if eta != 0:
            raise ValueError(f"eta applies to the ddim sampler only, not to {sampler}.")
        if kwargs.pop("return_trajectory", False):
            raise ValueError(f"the {sampler} sampler returns no trajectory: use ddpm or ddim.")
        if sampler == "heun":
            return heun_sample(diffusion, model, shape, steps=steps or 10, **kwargs)
        return dpm_solver_sample(diffusion, model, shape, steps=steps or 20,
                                 stochastic=sampler.endswith("sde"), **kwargs)
    raise ValueError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}.")
