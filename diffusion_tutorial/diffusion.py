"""The Gaussian diffusion process: forward corruption, true posterior, reverse step, loss.

:class:`GaussianDiffusion` holds a noise schedule and the equations of DDPM (Ho et al.
2020). It knows nothing of the network: every method that needs ε_θ takes any callable
``model(x_t, t)`` (or ``model(x_t, t, y)`` for class conditioning) that returns a tensor
shaped like ``x_t``: the noise ε, or x_0 or v when the process is built with
``prediction="x0"`` or ``"v"`` (:mod:`diffusion_tutorial.parameterization`); the process
converts the output, so every sampler works with each.

Timesteps ``t`` are 0-based tensor indices: index i is paper time t = i + 1 (see
:mod:`diffusion_tutorial.schedules`). So ``t = 0`` is the first step, where the reverse
step returns x_0 itself, and ``t = T - 1`` the last, where x_T is almost pure noise.
The book introduces each method in the chapter named in its docstring.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import parameterization as P
from .schedules import alphas_cumprod_from_betas, check_betas, make_betas
from .utils import as_timestep_tensor

Model = Callable[..., torch.Tensor]

VARIANCES = ("beta", "beta_tilde")


def extract(a: torch.Tensor, t: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:
    """Pick ``a[t]`` for each batch element and shape it (B, 1, 1, ...) to broadcast
    against a tensor of shape ``x_shape``."""
    out = a.gather(-1, t.to(a.device).long())  # (B,)
    return out.reshape(t.shape[0], *([1] * (len(x_shape) - 1)))


def _sqrt(v):
    """√v for a tensor or a plain number."""
    return v.sqrt() if torch.is_tensor(v) else math.sqrt(v)


def _relu(v):
    """max(v, 0) for a tensor or a plain number (guards √ against rounding below 0)."""
    return v.clamp(min=0) if torch.is_tensor(v) else max(v, 0.0)


def randn_like(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``; drawn on the generator's device, so a CPU
    generator gives the same numbers whatever device ``x`` lives on."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def normal_kl(mean1, var1, mean2, var2) -> torch.Tensor:
    """KL(N(mean1, var1) ‖ N(mean2, var2)) per element, for diagonal Gaussians (in nats)."""
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1)


class GaussianDiffusion(nn.Module):
    """A DDPM forward process and its reverse, for a fixed β schedule.

    Args:
        betas: the β schedule (T values in (0, 1)); if None, built from ``schedule``.
        schedule: ``"linear"`` (DDPM: 1e-4 .. 0.02) or ``"cosine"`` (Improved DDPM).
        timesteps: T, the number of diffusion steps.
        variance: σ_t² of the reverse step: ``"beta"`` (σ_t² = β_t, the upper bound) or
            ``"beta_tilde"`` (σ_t² = β̃_t, the posterior variance, the lower bound);
            DDPM section 3.2.
        beta_start, beta_end: β_1 and β_T of the linear schedule (see
            :func:`~diffusion_tutorial.schedules.make_betas`).
        prediction: what the network outputs: ``"eps"`` (ε), ``"x0"`` or ``"v"``.
        loss_weighting: ``"simple"``, ``"min_snr"`` (with ``min_snr_gamma`` γ) or ``"elbo"``;
            see :mod:`diffusion_tutorial.parameterization`.

    All schedule tensors are computed in float64 and stored as float32 buffers, so they
    move with ``.to(device)`` and are saved in ``state_dict``.
    """

    def __init__(
        self,
        betas: Optional[torch.Tensor] = None,
        *,
        schedule: str = "linear",
        timesteps: int = 1000,
        variance: str = "beta",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction: str = "eps",
        loss_weighting: str = "simple",
        min_snr_gamma: float = 5.0,
    ) -> None:
        super().__init__()
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance {variance!r}: choose 'beta' or 'beta_tilde'.")
        betas = make_betas(schedule, timesteps, beta_start, beta_end) if betas is None else check_betas(betas)
        self.variance = variance
        self.num_timesteps = int(betas.shape[0])

        alphas = 1 - betas
        alphas_cumprod = alphas_cumprod_from_betas(betas)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)   (DDPM eq. 7); exactly 0 at t = 1.
        posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)

        def buffer(name: str, value: torch.Tensor) -> None:
            self.register_buffer(name, value.to(torch.float32), persistent=False)

        buffer("betas", betas)
        buffer("alphas", alphas)
        buffer("alphas_cumprod", alphas_cumprod)
        buffer("alphas_cumprod_prev", alphas_cumprod_prev)
        buffer("sqrt_alphas_cumprod", alphas_cumprod.sqrt())
        buffer("sqrt_one_minus_alphas_cumprod", (1 - alphas_cumprod).sqrt())
        buffer("sqrt_recip_alphas", alphas.rsqrt())
        buffer("sqrt_recip_alphas_cumprod", alphas_cumprod.rsqrt())
        buffer("sqrt_recipm1_alphas_cumprod", (1 / alphas_cumprod - 1).sqrt())
        buffer("snr", alphas_cumprod / (1 - alphas_cumprod))
        buffer("posterior_variance", posterior_variance)
        # μ̃_t = coef1 · x_0 + coef2 · x_t   (DDPM eq. 7)
        buffer("posterior_mean_coef1", betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod))
        buffer("posterior_mean_coef2", (1 - alphas_cumprod_prev) * alphas.sqrt() / (1 - alphas_cumprod))
        # σ_t² of p_θ(x_{t−1} | x_t), and its log (β̃_1 = 0: clamped so the log stays finite)
        model_variance = betas if variance == "beta" else posterior_variance
        buffer("model_variance", model_variance)
        buffer("model_log_variance", model_variance.clamp(min=1e-20).log())
        # λ_t of the ELBO (DDPM eq. 12), in float64, with σ_1² = β_1; see elbo_weights
        elbo = betas ** 2 / (2 * torch.cat([betas[:1], model_variance[1:]]) * alphas * (1 - alphas_cumprod))
        buffer("_elbo_weights", elbo)
        # weight of the squared error of the network's target at each t (parameterization eq. 2)
        self.prediction = P.check_prediction(prediction)
        self.loss_weighting, self.min_snr_gamma = loss_weighting, float(min_snr_gamma)
        buffer("loss_weights", P.target_weight(alphas_cumprod / (1 - alphas_cumprod), loss_weighting,
                                               prediction, min_snr_gamma, elbo))
        # ᾱ_t as Python floats (float64): a sampler that steps the whole batch from one t
        # uses plain-number coefficients, with no tensor indexing per step.
        self._alphas_cumprod64 = alphas_cumprod.tolist()

    def extra_repr(self) -> str:
        return (f"T={self.num_timesteps}, variance={self.variance!r}, prediction={self.prediction!r}, "
                f"loss_weighting={self.loss_weighting!r}")

    # ------------------------------------------------------------------ helpers
    def _timesteps(self, t, batch: int, device) -> torch.Tensor:
        """Turn an int or a tensor of 0-based indices into a (B,) long tensor, checked."""
        return as_timestep_tensor(t, batch, device, self.num_timesteps)

    def sample_timesteps(self, batch: int, device=None, generator=None) -> torch.Tensor:
        """t uniform over the T steps (paper 1..T, i.e. indices 0..T−1), shape (B,)."""
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=gen_device)
        return t.to(device)

    # ------------------------------------------------------------------ forward process
    def q_step(self, x_prev: torch.Tensor, t, noise=None, generator=None) -> torch.Tensor:
        """One forward step: x_t ~ q(x_t | x_{t−1}) = N(√α_t x_{t−1}, β_t I)   (DDPM eq. 2).
        Chapter: The forward process."""
        t = self._timesteps(t, x_prev.shape[0], x_prev.device)
        noise = randn_like(x_prev, generator) if noise is None else noise
        return extract(self.alphas, t, x_prev.shape).sqrt() * x_prev + \
            extract(self.betas, t, x_prev.shape).sqrt() * noise

    def q_mean_variance(self, x0: torch.Tensor, t):
        """Mean √ᾱ_t x_0 and variance (1 − ᾱ_t) of q(x_t | x_0)   (DDPM eq. 4)."""
        t = self._timesteps(t, x0.shape[0], x0.device)
        mean = extract(self.sqrt_alphas_cumprod, t, x0.shape) * x0
        variance = extract(1 - self.alphas_cumprod, t, x0.shape).to(mean.dtype).expand_as(x0)
        return mean, variance

    def q_sample(self, x0: torch.Tensor, t, noise=None, generator=None) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) in closed form (DDPM eq. 4):

            x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε,   ε ~ N(0, I).

        Chapter: The forward process."""
        t = self._timesteps(t, x0.shape[0], x0.device)
        noise = randn_like(x0, generator) if noise is None else noise
        return extract(self.sqrt_alphas_cumprod, t, x0.shape) * x0 + \
            extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise

    # ------------------------------------------------------------------ posterior
    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t):
        """Mean and variance of the true posterior q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I):

            μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t
            β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)                          (DDPM eqs. 6–7)

        Chapter: The reverse process."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        mean = extract(self.posterior_mean_coef1, t, x_t.shape) * x0 + \
            extract(self.posterior_mean_coef2, t, x_t.shape) * x_t
        variance = extract(self.posterior_variance, t, x_t.shape).to(mean.dtype).expand_as(x_t)
        return mean, variance

    def predict_x0_from_eps(self, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t, eq. 4 solved for x_0."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        return extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - \
            extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps

    def predict_eps_from_x0(self, x_t: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
        """ε = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t), eq. 4 solved for ε."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        return (x_t - extract(self.sqrt_alphas_cumprod, t, x_t.shape) * x0) / \
            extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape)

    def mean_from_eps(self, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """μ_θ(x_t, t) = (1/√α_t) · (x_t − β_t / √(1 − ᾱ_t) · ε_θ(x_t, t))   (DDPM eq. 11).

        The mean of x_{t−1}, not a clean image. Chapter: The reverse process."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        coef = extract(self.betas / self.sqrt_one_minus_alphas_cumprod, t, x_t.shape)
        return extract(self.sqrt_recip_alphas, t, x_t.shape) * (x_t - coef * eps)

    def score_from_eps(self, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """s_θ(x_t, t) = −ε_θ(x_t, t) / √(1 − ᾱ_t), the score ∇ log q(x_t) the network
        implies (Song et al. 2021). Chapter: The score view."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        return -eps / extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape)

    def _a_s(self, t: torch.Tensor, x_shape):
        """a_t = √ᾱ_t and s_t = √(1 − ᾱ_t), shaped to broadcast against ``x_shape``."""
        return (extract(self.sqrt_alphas_cumprod, t, x_shape),
                extract(self.sqrt_one_minus_alphas_cumprod, t, x_shape))

    def eps_from_output(self, x_t: torch.Tensor, t, out: torch.Tensor) -> torch.Tensor:
        """ε from a network output of this process's ``prediction`` type (ε, x_0 or v)."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        return P.eps_from(self.prediction, out, x_t, *self._a_s(t, x_t.shape))

    def x0_from_output(self, x_t: torch.Tensor, t, out: torch.Tensor) -> torch.Tensor:
        """x_0 from a network output of this process's ``prediction`` type."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        return P.x0_from(self.prediction, out, x_t, *self._a_s(t, x_t.shape))

    def v_target(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho 2022, appendix D)."""
        t = self._timesteps(t, x0.shape[0], x0.device)
        return P.target("v", x0, noise, *self._a_s(t, x0.shape))

    # ------------------------------------------------------------------ reverse process
    def model_output(self, model: Model, x_t: torch.Tensor, t, y=None,
                     guidance_scale: float = 1.0) -> torch.Tensor:
        """The network's output at (x_t, t), with classifier-free guidance when ``y`` is
        given and ``guidance_scale`` w ≠ 1: out = out_∅ + w (out_y − out_∅) (Ho & Salimans
        2022; the same combination of ε, x_0 or v, since each is affine in the others).
        The model is called as ``model(x_t, t)`` when ``y`` is None."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        if y is None:
            return model(x_t, t)
        out_cond = model(x_t, t, y)
        if guidance_scale == 1.0:
            return out_cond
        out_uncond = model(x_t, t, None)
        return out_uncond + guidance_scale * (out_cond - out_uncond)

    def predict_eps(self, model: Model, x_t: torch.Tensor, t, y=None,
                    guidance_scale: float = 1.0) -> torch.Tensor:
        """ε_θ(x_t, t): the network's output (:meth:`model_output`) converted to ε."""
        return self.eps_from_output(x_t, t, self.model_output(model, x_t, t, y, guidance_scale))

    def predict_x0(self, model: Model, x_t: torch.Tensor, t, y=None,
                   guidance_scale: float = 1.0) -> torch.Tensor:
        """x̂_0(x_t, t): the network's output converted to the clean image."""
        return self.x0_from_output(x_t, t, self.model_output(model, x_t, t, y, guidance_scale))

    def p_mean_variance(self, model: Model, x_t: torch.Tensor, t, y=None,
                        guidance_scale: float = 1.0, clip_denoised: bool = False) -> dict:
        """Mean and variance of p_θ(x_{t−1} | x_t) = N(μ_θ, σ_t² I).

        μ_θ is computed from ε_θ by :meth:`mean_from_eps` (DDPM eq. 11). With
        ``clip_denoised`` the predicted x̂_0 is clipped to [−1, 1] and μ_θ is the posterior
        mean μ̃_t(x̂_0, x_t), which equals eq. 11 when no clipping happens.
        Returns a dict with ``mean``, ``variance``, ``log_variance``, ``pred_x0``, ``eps``."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        out = self.model_output(model, x_t, t, y, guidance_scale)
        eps, pred_x0 = self.eps_from_output(x_t, t, out), self.x0_from_output(x_t, t, out)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
            mean, _ = self.q_posterior(pred_x0, x_t, t)
        else:
            mean = self.mean_from_eps(x_t, t, eps)
        variance = extract(self.model_variance, t, x_t.shape)
        log_variance = extract(self.model_log_variance, t, x_t.shape)
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "pred_x0": pred_x0, "eps": eps}

    def p_sample(self, model: Model, x_t: torch.Tensor, t, y=None, noise=None,
                 generator=None, guidance_scale: float = 1.0,
                 clip_denoised: bool = False) -> dict:
        """One ancestral step x_{t−1} = μ_θ(x_t, t) + σ_t z, z ~ N(0, I), with z = 0 at
        the first step (t index 0), where the result is the model's x_0  (DDPM Algorithm 2).
        Returns the dict of :meth:`p_mean_variance` plus ``sample``."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        out = self.p_mean_variance(model, x_t, t, y, guidance_scale, clip_denoised)
        noise = randn_like(x_t, generator) if noise is None else noise
        nonzero = (t != 0).float().reshape(-1, *([1] * (x_t.ndim - 1)))  # no noise at t = 1
        out["sample"] = out["mean"] + nonzero * out["variance"].sqrt() * noise
        return out

    def ddim_step(self, x_t: torch.Tensor, t, t_prev, eps: torch.Tensor, eta: float = 0.0,
                  noise=None, generator=None, clip_denoised: bool = False) -> torch.Tensor:
        """One DDIM step from index ``t`` to ``t_prev`` (< t; −1 means "to x_0"):

            x_{t_prev} = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε_θ + σ z,
            σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)      (Song et al. 2021, eq. 12, 16)

        η = 0 is deterministic; η = 1 with consecutive steps is DDPM with σ_t² = β̃_t.
        ``t`` and ``t_prev`` are ints (one timestep for the whole batch, as samplers use:
        the coefficients are then plain numbers) or (B,) tensors of indices."""
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}.")
        if isinstance(t, int) and isinstance(t_prev, int):
            if not -1 <= t_prev < t < self.num_timesteps:
                raise ValueError(f"need -1 <= t_prev < t <= {self.num_timesteps - 1}, got t={t}, "
                                 f"t_prev={t_prev} (0-based indices; -1 means x_0).")
            abar_t = self._alphas_cumprod64[t]
            abar_prev = self._alphas_cumprod64[t_prev] if t_prev >= 0 else 1.0
        else:
            t = self._timesteps(t, x_t.shape[0], x_t.device)
            t_prev = torch.as_tensor(t_prev, device=x_t.device).long().expand(x_t.shape[0])
            abar_t = extract(self.alphas_cumprod, t, x_t.shape)
            abar_prev = torch.where(t_prev >= 0, self.alphas_cumprod[t_prev.clamp(min=0)],
                                    torch.ones_like(t_prev, dtype=abar_t.dtype)).reshape(abar_t.shape)
        pred_x0 = (x_t - _sqrt(1 - abar_t) * eps) / _sqrt(abar_t)  # eq. 4 solved for x_0
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
            eps = (x_t - _sqrt(abar_t) * pred_x0) / _sqrt(1 - abar_t)
        sigma = eta * _sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
        x_prev = _sqrt(abar_prev) * pred_x0 + _sqrt(_relu(1 - abar_prev - sigma ** 2)) * eps
        if eta > 0:
            noise = randn_like(x_t, generator) if noise is None else noise
            x_prev = x_prev + sigma * noise
        return x_prev

    # ------------------------------------------------------------------ loss
    def p_losses(self, model: Model, x0: torch.Tensor, t=None, noise=None, y=None,
                 generator=None, reduction: str = "mean") -> torch.Tensor:
        """L_simple = E_{t, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²   (DDPM eq. 14),
        or generally E λ'_t ‖target − output‖², with the target (ε, x_0 or v) of this
        process's ``prediction`` and λ'_t its ``loss_weights`` (1 for ``"simple"``).

        t is drawn uniformly over the T steps when not given. With ``reduction="none"``
        returns one weighted mean-squared error per example, shape (B,). Chapter: The loss."""
        if t is None:
            t = self.sample_timesteps(x0.shape[0], x0.device, generator)
        t = self._timesteps(t, x0.shape[0], x0.device)
        noise = randn_like(x0, generator) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)
        out = model(x_t, t) if y is None else model(x_t, t, y)
        if out.shape != noise.shape:
            raise ValueError(f"the model returned shape {tuple(out.shape)}, expected {tuple(noise.shape)}.")
        target = P.target(self.prediction, x0, noise, *self._a_s(t, x0.shape))
        loss = F.mse_loss(out, target, reduction="none").flatten(1).mean(1)  # (B,)
        loss = loss * self.loss_weights.to(loss.dtype)[t]  # exactly 1 for "simple"
        if reduction == "none":
            return loss
        if reduction == "mean":
            return loss.mean()
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")

    def elbo_weights(self) -> torch.Tensor:
        """λ_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t)): the weight that turns the noise MSE into the
        ELBO term L_{t−1} (DDPM eq. 12; per dimension). L_simple sets every λ_t to 1.
        Index 0 (t = 1) belongs to the decoder term L_0 and is reported for σ_t² = β_t.
        Computed in float64 when the process is built."""
        return self._elbo_weights.clone()
