"""Sampling loops: determinism, reproducibility, and the right distribution with an exact
(oracle) ε-model for Gaussian data, where everything has a closed form."""
import pytest
import torch

from diffusion_tutorial import GaussianDiffusion, ddim_sample, ddim_timesteps, ddpm_sample, sample


def gaussian_oracle(diffusion, m, s2):
    """For data x_0 ~ N(m, s²), x_t ~ N(√ᾱ m, ᾱ s² + 1 − ᾱ) and
    E[ε | x_t] = √(1 − ᾱ) (x_t − √ᾱ m) / (ᾱ s² + 1 − ᾱ): the best possible ε_θ."""
    def model(x_t, t):
        abar = diffusion.alphas_cumprod[t].reshape(-1, *[1] * (x_t.ndim - 1))
        return (1 - abar).sqrt() * (x_t - abar.sqrt() * m) / (abar * s2 + 1 - abar)
    return model


def point_oracle(diffusion, x0_star):
    """All data at one point x0*: the noise is determined by x_t."""
    def model(x_t, t):
        abar = diffusion.alphas_cumprod[t].reshape(-1, *[1] * (x_t.ndim - 1))
        return (x_t - abar.sqrt() * x0_star) / (1 - abar).sqrt()
    return model


def test_ddim_timesteps_run_from_last_to_first_index():
    seq = ddim_timesteps(1000, 50)
    assert len(seq) == 50 and seq[0] == 999 and seq[-1] == 0
    assert all(a > b for a, b in zip(seq, seq[1:]))
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="steps"):
            ddim_timesteps(1000, bad)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_with_point_oracle_lands_exactly_on_the_point(variance):
    d = GaussianDiffusion(timesteps=100, variance=variance)
    x0_star = torch.tensor([0.25, -0.5])
    out = ddpm_sample(d, point_oracle(d, x0_star), (64, 2), generator=torch.Generator().manual_seed(0),
                      progress=False)
    torch.testing.assert_close(out, x0_star.expand(64, 2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_with_gaussian_oracle_reproduces_the_data_distribution(variance):
    d = GaussianDiffusion(timesteps=1000, variance=variance)
    m, s2 = 0.5, 0.04
    x = ddpm_sample(d, gaussian_oracle(d, m, s2), (20_000, 1),
                    generator=torch.Generator().manual_seed(1), progress=False)
    assert x.mean().item() == pytest.approx(m, abs=0.01)
    assert x.var().item() == pytest.approx(s2, rel=0.1)


def test_ddim_eta0_is_deterministic_and_reaches_the_data_distribution():
    d = GaussianDiffusion(timesteps=1000)
    m, s2 = -0.3, 0.09
    model = gaussian_oracle(d, m, s2)
    x_T = torch.randn(20_000, 1, generator=torch.Generator().manual_seed(2))
    a = ddim_sample(d, model, x_T.shape, steps=50, x_T=x_T, progress=False,
                    generator=torch.Generator().manual_seed(3))
    b = ddim_sample(d, model, x_T.shape, steps=50, x_T=x_T, progress=False,
                    generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    # η = 0 follows a deterministic ODE; its discretisation error shrinks with more steps,
    # and with all T steps the samples have the data's mean and variance.
    full = ddim_sample(d, model, x_T.shape, steps=1000, x_T=x_T, progress=False)
    errors = [abs(x.var().item() - s2) for x in (ddim_sample(d, model, x_T.shape, steps=10, x_T=x_T,
                                                              progress=False), a, full)]
    assert errors[0] > errors[1] > errors[2]
    assert full.mean().item() == pytest.approx(m, abs=0.015)
    assert full.var().item() == pytest.approx(s2, rel=0.05)


def test_ddim_eta1_is_stochastic():
    d = GaussianDiffusion(timesteps=100)
    model = gaussian_oracle(d, 0.0, 1.0)
    x_T = torch.randn(8, 1)
    a = ddim_sample(d, model, x_T.shape, steps=10, eta=1.0, x_T=x_T, progress=False,
                    generator=torch.Generator().manual_seed(5))
    b = ddim_sample(d, model, x_T.shape, steps=10, eta=1.0, x_T=x_T, progress=False,
                    generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(a, b)


def test_seeded_ddpm_is_reproducible_and_trajectory_runs_from_noise_to_sample():
    d = GaussianDiffusion(timesteps=50)
    model = gaussian_oracle(d, 0.0, 0.25)
    a = ddpm_sample(d, model, (4, 1, 2, 2), generator=torch.Generator().manual_seed(7), progress=False)
    b, traj = ddpm_sample(d, model, (4, 1, 2, 2), generator=torch.Generator().manual_seed(7),
                          progress=False, return_trajectory=True, trajectory_keep=6)
    assert torch.equal(a, b)
    assert [step for step, _, _ in traj][0] == 50 and traj[-1][0] == 0
    assert len(traj) == 1 + 6
    assert torch.equal(traj[-1][1], b)


def test_sample_dispatches_and_rejects_impossible_settings():
    d = GaussianDiffusion(timesteps=20)
    model = gaussian_oracle(d, 0.0, 1.0)
    assert sample(d, model, (2, 1), sampler="ddim", steps=5, progress=False).shape == (2, 1)
    with pytest.raises(ValueError, match="ddim"):
        sample(d, model, (2, 1), sampler="ddpm", steps=5, progress=False)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(d, model, (2, 1), sampler="euler", progress=False)
    with pytest.raises(ValueError, match="eta"):
        sample(d, model, (2, 1), sampler="ddim", steps=5, eta=-1.0, progress=False)
