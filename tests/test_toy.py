"""Toy 2-D data and the exact Gaussian-mixture denoiser, against independent truth."""
import math

import pytest
import torch

from diffusion_tutorial import GaussianDiffusion, ddpm_sample
from diffusion_tutorial.toy import GaussianMixture, count_modes, mode_counts, two_moons


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(schedule="linear", timesteps=1000)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- sampling and density
def test_ring_samples_mean_and_covariance():
    mix = GaussianMixture.ring(k=8, radius=2.0, std=0.1)
    x = mix.sample(40_000, gen(0)).double()
    # mean 0; covariance (r²/2 + σ²) I for equal modes evenly spaced on a circle
    assert x.mean(0).abs().max() < 0.03
    cov = torch.cov(x.T)
    assert torch.allclose(cov, (2.0 ** 2 / 2 + 0.1 ** 2) * torch.eye(2, dtype=torch.float64), atol=0.05)


def test_grid_and_weights():
    mix = GaussianMixture.grid(size=3, spacing=2.0, std=0.05)
    assert mix.num_modes == 9 and mix.means.abs().max() == 2.0
    skewed = GaussianMixture([[0.0, 0.0], [5.0, 0.0]], std=0.2, weights=[3, 1])
    x, k = skewed.sample(20_000, gen(1), return_labels=True)
    assert abs(k.double().mean().item() - 0.25) < 0.015
    assert abs(x[:, 0].double().mean().item() - 1.25) < 0.08
    with pytest.raises(ValueError):
        GaussianMixture([[0.0, 0.0]], std=0.0)


def test_log_prob_matches_torch_distributions_and_normalises():
    mix = GaussianMixture([[0.5, -1.0], [-1.0, 1.0]], std=0.7, weights=[0.3, 0.7])
    x = torch.randn(50, 2, generator=gen(2), dtype=torch.float64) * 2
    comps = [torch.distributions.MultivariateNormal(m, 0.49 * torch.eye(2, dtype=torch.float64)) for m in mix.means]
    ref = torch.log(0.3 * comps[0].log_prob(x).exp() + 0.7 * comps[1].log_prob(x).exp())
    assert torch.allclose(mix.log_prob(x), ref, atol=1e-10)
    # the density integrates to 1 (Riemann sum on a fine grid)
    axis = torch.linspace(-6, 6, 301, dtype=torch.float64)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    assert abs(mix.log_prob(grid).exp().sum().item() * (axis[1] - axis[0]).item() ** 2 - 1) < 1e-3


# ---------------------------------------------------------------------- the exact denoiser
@pytest.mark.parametrize("t_index", [0, 40, 300, 999])
def test_score_is_the_gradient_of_log_q_t(diffusion, t_index):
    mix = GaussianMixture.ring(k=8, radius=2.0, std=0.1)
    abar = diffusion.alphas_cumprod[t_index].double()
    x0 = mix.sample(16, gen(3)).double()
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * torch.randn(16, 2, generator=gen(4), dtype=torch.float64)
    h = 1e-5
    grad = torch.zeros_like(x_t)
    for d in range(2):   # central finite differences of log q_t(x_t)
        e = torch.zeros(2, dtype=torch.float64)
        e[d] = h
        grad[:, d] = (mix.log_prob_t(x_t + e, t_index, diffusion) - mix.log_prob_t(x_t - e, t_index, diffusion)) / (2 * h)
    score = mix.score(x_t, t_index, diffusion)
    assert torch.allclose(score, grad, rtol=1e-4, atol=1e-4 * grad.abs().max().item())
    eps = mix.oracle_eps(x_t, t_index, diffusion)
    assert torch.allclose(eps, -(1 - abar).sqrt() * grad, rtol=1e-4, atol=1e-6)


def test_one_component_oracle_closed_form_and_monte_carlo(diffusion):
    mu, sigma, t_index = torch.tensor([[1.5, -0.5]]), 0.6, 150
    mix = GaussianMixture(mu, std=sigma)
    abar = diffusion.alphas_cumprod[t_index].double()
    v = abar * sigma ** 2 + 1 - abar
    # Monte Carlo: draw (x_0, ε), form x_t, and regress ε on x_t; for Gaussian x_0 the
    # conditional mean E[ε | x_t] is linear, so least squares recovers it.
    n = 200_000
    x0 = mu.double() + sigma * torch.randn(n, 2, generator=gen(5), dtype=torch.float64)
    eps = torch.randn(n, 2, generator=gen(6), dtype=torch.float64)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    design = torch.cat([x_t, torch.ones(n, 1, dtype=torch.float64)], 1)   # (n, 3)
    coef = torch.linalg.lstsq(design, eps).solution                       # (3, 2)
    slope_true = ((1 - abar).sqrt() / v).item()
    assert torch.allclose(coef[:2], slope_true * torch.eye(2, dtype=torch.float64), atol=0.01)
    assert torch.allclose(coef[2], -slope_true * abar.sqrt() * mu[0].double(), atol=0.01)
    # closed form: E[ε | x_t] = √(1 − ᾱ_t) (x_t − √ᾱ_t μ) / (ᾱ_t σ² + 1 − ᾱ_t)
    probe = torch.randn(10, 2, generator=gen(7), dtype=torch.float64)
    expected = (1 - abar).sqrt() * (probe - abar.sqrt() * mu.double()) / v
    assert torch.allclose(mix.oracle_eps(probe, t_index, diffusion), expected, atol=1e-10)


def test_oracle_residual_is_orthogonal_to_functions_of_x_t(diffusion):
    """E[(ε − E[ε|x_t]) g(x_t)] = 0 for every g: the defining property of a conditional mean."""
    mix = GaussianMixture.ring(k=8, radius=2.0, std=0.1)
    n, t_index = 100_000, 250
    t = torch.full((n,), t_index)
    x0 = mix.sample(n, gen(8))
    eps = torch.randn(n, 2, generator=gen(9))
    x_t = diffusion.q_sample(x0, t, noise=eps)
    residual = (eps - mix.oracle_eps(x_t, t, diffusion)).double()
    for g in (torch.ones(n, 1), x_t, torch.tanh(2 * x_t), x_t.norm(dim=1, keepdim=True)):
        prod = residual * g.double()
        se = prod.std(0) / math.sqrt(n)
        assert (prod.mean(0).abs() < 4 * se + 1e-4).all()
    # and it beats the best single-Gaussian (linear) denoiser in squared error
    linear = GaussianMixture(torch.zeros(1, 2), std=math.sqrt(2.0 ** 2 / 2 + 0.01)).oracle_eps(x_t, t, diffusion)
    assert (eps - mix.oracle_eps(x_t, t, diffusion)).pow(2).mean() < 0.9 * (eps - linear).pow(2).mean()


def test_oracle_sampler_recovers_all_modes():
    """Ancestral sampling with the exact denoiser reproduces the mixture."""
    diffusion = GaussianDiffusion(schedule="cosine", timesteps=100)
    mix = GaussianMixture.ring(k=8, radius=2.0, std=0.1)
    x = ddpm_sample(diffusion, mix.oracle_model(diffusion), (2000, 2), generator=gen(10), progress=False)
    coverage = count_modes(x, mix)
    assert coverage.modes == 8 and coverage.high_quality > 0.9


def test_time_index_is_checked(diffusion):
    mix = GaussianMixture.ring()
    with pytest.raises(ValueError, match="0-based"):
        mix.score(torch.zeros(3, 2), 1000, diffusion)


# ---------------------------------------------------------------------- modes and moons
def test_count_modes_full_and_collapsed():
    mix = GaussianMixture.ring(k=8, radius=2.0, std=0.1)
    full = count_modes(mix.sample(4000, gen(11)), mix)
    assert full.modes == 8 and full.high_quality > 0.97          # P(|z| < 3) = 1 − e^{−4.5} in 2-D
    collapsed = GaussianMixture(mix.means[:3], std=0.1).sample(4000, gen(12))
    assert count_modes(collapsed, mix).modes == 3
    assert mode_counts(collapsed, mix)[3:].sum() == 0
    spread = 6 * torch.rand(4000, 2, generator=gen(13)) - 3       # uniform junk
    assert count_modes(spread, mix).high_quality < 0.1


def test_two_moons_standardised_and_shaped():
    x, y = two_moons(40_000, noise=0.1, generator=gen(14), return_labels=True)
    assert x.shape == (40_000, 2) and x.dtype == torch.float32
    assert x.double().mean(0).abs().max() < 0.02
    assert (x.double().var(0) - 1).abs().max() < 0.03
    assert y.sum().item() == 20_000
    # the upper moon (label 0) sits above the lower one on average
    assert x[y == 0, 1].mean() > x[y == 1, 1].mean() + 1
    assert torch.equal(two_moons(10, generator=gen(1)), two_moons(10, generator=gen(1)))
