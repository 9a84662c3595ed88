"""Schedules: exact values at the first and last step, validation, float64 precision."""
import math

import pytest
import torch

from diffusion_tutorial import GaussianDiffusion, schedules


def test_linear_schedule_matches_ddpm_endpoints():
    betas = schedules.linear_beta_schedule(1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    assert torch.all(betas[1:] > betas[:-1])


def test_cosine_alphas_cumprod_follow_closed_form():
    T, s = 1000, 0.008
    betas = schedules.cosine_beta_schedule(T, s=s)
    abar = schedules.alphas_cumprod_from_betas(betas)
    f = lambda t: math.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2
    # Paper t = 1 is index 0; away from the clipped end the product reproduces f(t)/f(0).
    for t in (1, 2, 500, 900):
        assert abar[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-10)
    assert betas.max().item() <= 0.999
    assert betas[-1].item() == pytest.approx(0.999)  # the clip is active at t = T
    assert abar[-1].item() < 1e-6


def test_snr_is_signal_over_noise_and_decreasing():
    d = GaussianDiffusion(timesteps=100)
    abar = torch.cumprod(1 - schedules.linear_beta_schedule(100), 0)  # float64
    torch.testing.assert_close(d.snr, (abar / (1 - abar)).float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(schedules.snr(abar), abar / (1 - abar))
    assert torch.all(d.snr[1:] < d.snr[:-1])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_buffers_are_float32_and_indexed_from_paper_t_1(schedule):
    d = GaussianDiffusion(schedule=schedule, timesteps=50)
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance"):
        assert getattr(d, name).dtype == torch.float32
    assert d.alphas_cumprod_prev[0].item() == 1.0  # ᾱ_0 = 1
    torch.testing.assert_close(d.alphas_cumprod_prev[1:], d.alphas_cumprod[:-1])
    assert d.alphas_cumprod[0].item() == pytest.approx(1 - d.betas[0].item())  # ᾱ_1 = α_1


def test_float64_cumprod_is_kept_in_float32_buffer():
    d = GaussianDiffusion(timesteps=1000)
    exact = torch.cumprod(1 - schedules.linear_beta_schedule(1000), 0)[-1].item()
    # A float32 cumulative product drifts; computing in float64 keeps ~7 significant digits.
    assert d.alphas_cumprod[-1].item() == pytest.approx(exact, rel=1e-5)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_timesteps_are_refused(bad):
    with pytest.raises(ValueError, match="positive integer"):
        schedules.linear_beta_schedule(bad)


@pytest.mark.parametrize("betas", [[0.1, 1.0], [0.0, 0.1], [-0.1, 0.2], [float("nan")]])
def test_betas_outside_open_unit_interval_are_refused(betas):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        GaussianDiffusion(torch.tensor(betas))


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match="linear, cosine"):
        schedules.make_betas("quadratic", 10)


def test_make_betas_sets_the_linear_endpoints_and_the_diffusion_uses_them():
    T, start, end = 50, 1e-3, 0.05
    betas = schedules.make_betas("linear", T, beta_start=start, beta_end=end)
    expected = start + (end - start) * torch.arange(T, dtype=torch.float64) / (T - 1)  # β_1 .. β_T
    torch.testing.assert_close(betas, expected, rtol=0, atol=1e-15)
    diffusion = GaussianDiffusion(schedule="linear", timesteps=T, beta_start=start, beta_end=end)
    torch.testing.assert_close(diffusion.betas, expected.float())
    cosine = schedules.make_betas("cosine", T, beta_start=start, beta_end=end)   # no endpoints to set
    torch.testing.assert_close(cosine, schedules.cosine_beta_schedule(T), rtol=0, atol=0)
