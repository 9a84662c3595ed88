"""Score view: scores from ε and Langevin sampling, against exact Gaussian and mixture scores."""
import math

import torch

from diffusion_tutorial import GaussianDiffusion
from diffusion_tutorial.score import (annealed_langevin_sample, diffusion_noise_levels,
                                      gaussian_score, langevin_sample, model_score)
from diffusion_tutorial.toy import GaussianMixture, count_modes


def _autograd_mixture_score(mix: GaussianMixture, x: torch.Tensor, abar: float) -> torch.Tensor:
    """∇ log q_t(x) by automatic differentiation of torch.distributions' mixture log-density,
    independent of the package's closed form: q_t = Σ_k w_k N(√ᾱ μ_k, (ᾱ σ² + 1 − ᾱ) I)."""
    x = x.double().clone().requires_grad_(True)
    comp = torch.distributions.Independent(torch.distributions.Normal(
        math.sqrt(abar) * mix.means, math.sqrt(abar * mix.std ** 2 + 1 - abar)), 1)
    q_t = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(mix.weights), comp)
    (grad,) = torch.autograd.grad(q_t.log_prob(x).sum(), x)
    return grad


def test_score_from_eps_of_oracle_eps_equals_autograd_mixture_score():
    d = GaussianDiffusion(timesteps=1000)
    mix = GaussianMixture.ring(k=8, radius=2.0, std=0.1)
    g = torch.Generator().manual_seed(0)
    for t in (0, 10, 250, 999):
        abar = d.alphas_cumprod[t].item()
        x_t = math.sqrt(abar) * mix.sample(64, g) + math.sqrt(1 - abar) * torch.randn(64, 2, generator=g)
        eps = mix.oracle_eps(x_t, t, d)
        got = d.score_from_eps(x_t, t, eps).double()
        want = _autograd_mixture_score(mix, x_t, abar)
        scale = want.abs().max().item()
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-4 * scale), (t, (got - want).abs().max())
        # model_score wraps the same formula around any ε-model
        via_model = model_score(mix.oracle_model(d), d)(x_t, t).double()
        assert torch.allclose(via_model, want, rtol=1e-3, atol=1e-4 * scale)


def test_langevin_with_exact_gaussian_score_reaches_mean_and_covariance():
    mean = torch.tensor([1.0, -2.0])
    cov = torch.tensor([[1.0, 0.5], [0.5, 2.0]])
    g = torch.Generator().manual_seed(1)
    x = langevin_sample(gaussian_score(mean, cov), torch.zeros(4000, 2), step_size=0.02,
                        n_steps=1500, generator=g)
    assert torch.allclose(x.mean(0), mean, atol=0.1), x.mean(0)
    emp_cov = torch.cov(x.T)
    # stationary ULA covariance is Σ (I − δ Σ⁻¹ / 4)⁻¹: within 1% of Σ for δ = 0.02
    assert torch.allclose(emp_cov, cov, atol=0.1 * cov.diagonal().max()), emp_cov
    assert abs(emp_cov[1, 1] / emp_cov[0, 0] - 2.0) < 0.25


def test_langevin_1d_with_large_step_shows_the_predicted_bias():
    """ULA on N(0, s²) has stationary variance s² / (1 − δ / (4 s²)): check it for a large δ."""
    s2, delta = 1.0, 0.8
    g = torch.Generator().manual_seed(2)
    x = langevin_sample(lambda x: -x / s2, torch.zeros(20000, 1), delta, 200, generator=g)
    predicted = s2 / (1 - delta / (4 * s2))  # 1.25
    assert abs(x.var().item() - predicted) < 0.05, x.var()
    assert abs(x.mean().item()) < 0.03


def test_langevin_trajectory_and_bad_input():
    x, traj = langevin_sample(lambda x: -x, torch.zeros(10, 2), 0.1, 20, return_trajectory=True,
                              trajectory_keep=5)
    assert traj[0].abs().sum() == 0 and len(traj) == 6 and torch.equal(traj[-1], x)
    try:
        langevin_sample(lambda x: -x, torch.zeros(1, 2), -0.1, 5)
    except ValueError as err:
        assert "step_size" in str(err)
    else:
        raise AssertionError("a negative step size must be rejected")


def test_noise_levels_are_distinct_decreasing_and_end_at_zero():
    d = GaussianDiffusion(timesteps=1000)
    for spacing in ("geometric", "linear"):
        levels, sigmas = diffusion_noise_levels(d, 12, spacing)
        assert levels[0] == 999 and levels[-1] == 0
        assert all(a > b for a, b in zip(levels, levels[1:]))
        assert torch.all(sigmas[1:] < sigmas[:-1])
        assert torch.allclose(sigmas, d.sqrt_one_minus_alphas_cumprod[torch.tensor(levels)])


def test_annealed_langevin_with_exact_mixture_score_covers_the_ring():
    d = GaussianDiffusion(timesteps=1000)
    mix = GaussianMixture.ring(k=8, radius=2.0, std=0.1)
    g = torch.Generator().manual_seed(3)
    levels, sigmas = diffusion_noise_levels(d, 10)
    x = annealed_langevin_sample(lambda x, t: mix.score(x, t, d), torch.randn(400, 2, generator=g),
                                 levels, sigmas, step_size=2e-4, n_steps_each=10, generator=g)
    coverage = count_modes(x, mix)
    assert coverage.modes >= 7, coverage
    assert coverage.high_quality > 0.9, coverage
    # plain Langevin at the data level from the same start, with too few steps, is worse
    # at putting mass near the modes (the reason for annealing)
    x_plain = langevin_sample(lambda x: mix.score(x, 0, d), torch.randn(400, 2, generator=g),
                              step_size=2e-4, n_steps=100, generator=g)
    assert count_modes(x_plain, mix).high_quality < coverage.high_quality
