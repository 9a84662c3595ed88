"""Two-dimensional toy data, and the exact denoiser for a Gaussian mixture.

Low-dimensional data let the early chapters *see* the whole distribution: a scatter plot
shows every mode, and for a Gaussian mixture the ideal denoiser is known in closed form,
so a trained network can be compared with the truth.

The key fact: if x_0 ~ Σ_k w_k N(μ_k, σ² I) and x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (DDPM eq. 4), then

    q_t(x_t) = Σ_k w_k N(x_t; √ᾱ_t μ_k, v_t I),   v_t = ᾱ_t σ² + (1 − ᾱ_t),

again a mixture, with the same weights. Its score and the posterior mean of the noise are

    ∇ log q_t(x_t) = Σ_k r_k(x_t) (√ᾱ_t μ_k − x_t) / v_t,
    E[ε | x_t]     = −√(1 − ᾱ_t) ∇ log q_t(x_t)      (Tweedie's formula; Song et al. 2021),

where r_k(x_t) ∝ w_k N(x_t; √ᾱ_t μ_k, v_t I) are the responsibilities, computed stably
with a log-sum-exp. E[ε | x_t] is the minimiser of L_simple, so it is what a perfect
ε_θ would output. Time ``t`` is a 0-based index (index i is paper time t = i + 1).
Chapter: The forward process.
Chapter: The score view.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from .utils import as_timestep_tensor


def two_moons(n: int, noise: float = 0.1, generator: Optional[torch.Generator] = None,
              return_labels: bool = False):
    """``n`` points on two interleaved half circles, standardised to mean 0 and variance 1
    per coordinate. Returns float32 (n, 2) (and int labels 0/1 if ``return_labels``).

    Raw moons: upper (cos θ, sin θ), lower (1 − cos θ, ½ − sin θ), θ ~ U[0, π], plus
    N(0, noise²) per coordinate. Exact moments of that mixture: mean (½, ¼),
    Var x = ¾ + noise², Var y = ½ − 4/π² + (4/π − ½)²/4 + noise²; we subtract and divide."""
    if n <= 0:
        raise ValueError(f"n must be a positive integer, got {n}.")
    labels = (torch.arange(n) >= (n + 1) // 2).long()  # first half upper moon (0), rest lower (1)
    theta = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    upper = torch.stack([theta.cos(), theta.sin()], 1)             # (n, 2)
    lower = torch.stack([1 - theta.cos(), 0.5 - theta.sin()], 1)   # (n, 2)
    x = torch.where(labels[:, None] == 0, upper, lower)
    x = x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    mean = torch.tensor([0.5, 0.25], dtype=torch.float64)
    var = torch.tensor([0.75, 0.5 - 4 / math.pi ** 2 + (4 / math.pi - 0.5) ** 2 / 4], dtype=torch.float64)
    x = ((x - mean) / (var + noise ** 2).sqrt()).float()
    return (x, labels) if return_labels else x


def _abar(diffusion, t, n: int) -> torch.Tensor:
    """ᾱ_t for 0-based indices ``t`` (int or (n,) tensor) as float64, shape (n, 1), or
    (1, 1) when every row shares one t (as in a sampling loop), which broadcasts cheaply."""
    t = as_timestep_tensor(t, n, "cpu", diffusion.num_timesteps)
    if n > 0 and bool((t == t[0]).all()):
        t = t[:1]
    return diffusion.alphas_cumprod.detach().cpu().double()[t][:, None]


class GaussianMixture:
    """An isotropic Gaussian mixture p(x) = Σ_k w_k N(x; μ_k, σ² I).

    Args:
        means: (K, D) component means μ_k.
        std: the shared standard deviation σ.
        weights: (K,) mixing weights w_k (normalised here); uniform if None.
    """

    def __init__(self, means, std: float, weights=None) -> None:
        self.means = torch.as_tensor(means, dtype=torch.float64).cpu()  # (K, D)
        if self.means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(self.means.shape)}.")
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}.")
        self.std = float(std)
        K = len(self.means)
        w = torch.as_tensor(torch.ones(K) if weights is None else weights, dtype=torch.float64)
        if w.shape != (K,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {K} non-negative numbers with a positive sum.")
        self.weights = w / w.sum()  # (K,)

    @classmethod
    def ring(cls, k: int = 8, radius: float = 2.0, std: float = 0.1) -> "GaussianMixture":
        """``k`` equal modes evenly spaced on a circle of ``radius`` (the classic GAN
        mode-collapse benchmark, Metz et al. 2017)."""
        angle = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
        return cls(radius * torch.stack([angle.cos(), angle.sin()], 1), std)

    @classmethod
    def grid(cls, size: int = 5, spacing: float = 1.0, std: float = 0.05) -> "GaussianMixture":
        """``size`` x ``size`` equal modes on a square grid centred at 0."""
        axis = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) * spacing
        gx, gy = torch.meshgrid(axis, axis, indexing="ij")
        return cls(torch.stack([gx.flatten(), gy.flatten()], 1), std)

    @property
    def num_modes(self) -> int:
        return len(self.means)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_modes}, D={self.dim}, std={self.std})"

    def sample(self, n: int, generator: Optional[torch.Generator] = None, return_labels: bool = False):
        """Draw ``n`` points: k ~ Categorical(w), x = μ_k + σ z. float32 (n, D)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = (self.means[k] + self.std * z).float()
        return (x, k) if return_labels else x

    # ------------------------------------------------------------------ densities
    def _log_components(self, x: torch.Tensor, means: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; m_k, v I), shape (N, K). means (N or 1, K, D), var (N or 1, 1)."""
        sq = ((x.double()[:, None, :] - means) ** 2).sum(-1)  # (N, K)
        return self.weights.log() - sq / (2 * var) - 0.5 * self.dim * torch.log(2 * math.pi * var)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = logsumexp_k [log w_k + log N(x; μ_k, σ² I)], shape (N,)."""
        var = torch.tensor([[self.std ** 2]], dtype=torch.float64)
        return torch.logsumexp(self._log_components(x.cpu(), self.means[None], var), 1).to(x.dtype)

    def _time_t(self, x_t: torch.Tensor, t, diffusion):
        abar = _abar(diffusion, t, x_t.shape[0])                    # (N or 1, 1)
        means = abar.sqrt()[:, :, None] * self.means[None]          # (N or 1, K, D): √ᾱ_t μ_k
        var = abar * self.std ** 2 + (1 - abar)                     # (N or 1, 1): v_t
        return abar, means, var

    def log_prob_t(self, x_t: torch.Tensor, t, diffusion) -> torch.Tensor:
        """log q_t(x_t) for the noised data at step ``t``: the mixture with means √ᾱ_t μ_k
        and variance v_t = ᾱ_t σ² + 1 − ᾱ_t (see the module docstring). Shape (N,)."""
        _, means, var = self._time_t(x_t.cpu(), t, diffusion)
        return torch.logsumexp(self._log_components(x_t.cpu(), means, var), 1).to(x_t.dtype)

    def score(self, x_t: torch.Tensor, t, diffusion) -> torch.Tensor:
        """The exact score ∇_x log q_t(x_t) = Σ_k r_k (√ᾱ_t μ_k − x_t) / v_t, shape (N, D)."""
        device, dtype, x = x_t.device, x_t.dtype, x_t.detach().cpu().double()
        _, means, var = self._time_t(x, t, diffusion)
        logits = self.weights.log() - ((x[:, None, :] - means) ** 2).sum(-1) / (2 * var)  # (N, K)
        r = (logits - logits.amax(1, keepdim=True)).exp()
        r = r / r.sum(1, keepdim=True)                              # (N, K) responsibilities
        s = ((r[:, :, None] * means).sum(1) - x) / var              # (N, D)
        return s.to(device=device, dtype=dtype)

    def oracle_eps(self, x_t: torch.Tensor, t, diffusion) -> torch.Tensor:
        """The exact denoiser E[ε | x_t] = −√(1 − ᾱ_t) ∇ log q_t(x_t): what a perfectly
        trained ε_θ(x_t, t) would output for this data distribution. Shape (N, D)."""
        abar = _abar(diffusion, t, x_t.shape[0])                    # (N or 1, 1)
        s = self.score(x_t, t, diffusion).double()
        return (-(1 - abar).sqrt().to(s.device) * s).to(x_t.dtype)

    def oracle_model(self, diffusion):
        """A callable ``model(x_t, t)`` returning :meth:`oracle_eps`, usable with the samplers."""
        return lambda x_t, t, *_: self.oracle_eps(x_t, t, diffusion)


# ---------------------------------------------------------------------- mode coverage
class ModeCoverage(NamedTuple):
    """Result of :func:`count_modes`."""
    modes: int           # modes that received at least min_share of the samples
    high_quality: float  # share of samples within ``radius`` of some mode


def mode_counts(samples: torch.Tensor, mixture: GaussianMixture,
                radius: Optional[float] = None) -> torch.Tensor:
    """How many samples lie within ``radius`` (default 3σ) of each mode, each sample
    counted for its nearest mode only. Shape (K,)."""
    radius = 3 * mixture.std if radius is None else radius
    dist = torch.cdist(samples.detach().cpu().double(), mixture.means)  # (N, K)
    nearest, k = dist.min(1)
    return torch.bincount(k[nearest <= radius], minlength=mixture.num_modes)


def count_modes(samples: torch.Tensor, mixture: GaussianMixture, radius: Optional[float] = None,
                min_share: Optional[float] = None) -> ModeCoverage:
    """Mode coverage of ``samples`` (N, D) against the true ``mixture``, in the manner of the
    GAN mode-collapse benchmarks (Metz et al. 2017; Srivastava et al. 2017): a sample is
    *high quality* when it lies within ``radius`` (default 3σ) of a mode; a mode is
    *covered* when it holds at least ``min_share`` of all samples (default a quarter of its
    fair share, 1/(4K)). A collapsed generator covers few modes; a good one covers all K."""
    if len(samples) == 0:
        raise ValueError("count_modes needs at least one sample.")
    counts = mode_counts(samples, mixture, radius)
    min_share = 1 / (4 * mixture.num_modes) if min_share is None else min_share
    shares = counts.double() / len(samples)
    return ModeCoverage(int((shares >= min_share).sum()), float(shares.sum()))
