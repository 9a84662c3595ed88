"""The forward process, the true posterior, the reverse step and the loss, checked against
independent truth: closed forms, Bayes' rule on a grid, and statistics of many samples."""
import math

import pytest
import torch

from diffusion_tutorial import GaussianDiffusion, linear_beta_schedule, normal_kl


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(timesteps=1000)


def g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("t", [0, 10, 499, 999])
def test_q_sample_mean_and_variance_from_many_samples(diffusion, t):
    n, x0_value = 200_000, 0.7
    x0 = torch.full((n, 1), x0_value)
    x_t = diffusion.q_sample(x0, t, generator=g(t))
    abar = diffusion.alphas_cumprod[t].item()
    mean, var = x_t.mean().item(), x_t.var().item()
    # 5 standard errors: these fail if the √ on ᾱ_t or an index is off.
    assert mean == pytest.approx(math.sqrt(abar) * x0_value, abs=5 * math.sqrt((1 - abar) / n))
    assert var == pytest.approx(1 - abar, abs=5 * (1 - abar) * math.sqrt(2 / n))


def test_q_sample_at_first_step_is_one_forward_step(diffusion):
    x0, noise = torch.randn(4, 3, generator=g()), torch.randn(4, 3, generator=g(1))
    expected = math.sqrt(1 - 1e-4) * x0 + math.sqrt(1e-4) * noise
    torch.testing.assert_close(diffusion.q_sample(x0, 0, noise), expected)
    torch.testing.assert_close(diffusion.q_step(x0, 0, noise), expected)


def test_iterated_single_steps_match_the_closed_form_in_distribution():
    d = GaussianDiffusion(timesteps=200)
    n, k = 100_000, 150
    x = torch.full((n, 1), 1.5)
    gen = g(3)
    for t in range(k):
        x = d.q_step(x, t, generator=gen)
    abar = d.alphas_cumprod[k - 1].item()
    assert x.mean().item() == pytest.approx(math.sqrt(abar) * 1.5, abs=0.01)
    assert x.var().item() == pytest.approx(1 - abar, abs=0.01)


def test_unit_variance_data_keeps_unit_variance_only_with_the_square_root(diffusion):
    x0 = torch.randn(200_000, 1, generator=g(4))
    t = 300
    x_t = diffusion.q_sample(x0, t, generator=g(5))
    assert x_t.var().item() == pytest.approx(1.0, abs=0.01)
    abar = diffusion.alphas_cumprod[t]
    wrong = abar * x0 + (1 - abar).sqrt() * torch.randn(x0.shape, generator=g(6))
    assert wrong.var().item() < 0.9  # ᾱ_t² + 1 − ᾱ_t < 1


def test_x_T_is_close_to_standard_normal(diffusion):
    x0 = torch.rand(50_000, 2, generator=g(7)) * 2 - 1
    x_T = diffusion.q_sample(x0, diffusion.num_timesteps - 1, generator=g(8))
    assert x_T.mean().abs().max().item() < 0.03
    assert (x_T.var(0) - 1).abs().max().item() < 0.03


@pytest.mark.parametrize("t", [1, 2, 50, 400, 999])
def test_posterior_matches_bayes_rule_on_a_grid(diffusion, t):
    """q(x_{t−1} | x_t, x_0) ∝ q(x_t | x_{t−1}) q(x_{t−1} | x_0), normalised numerically."""
    x0, x_t = 0.8, -0.3
    # The schedule in float64, independently of the float32 buffers under test.
    betas = linear_beta_schedule(1000)
    abar_prev = torch.cumprod(1 - betas, 0)[t - 1]
    beta = betas[t]
    alpha = 1 - beta
    grid = torch.linspace(-6, 6, 400_001, dtype=torch.float64)
    log_prior = -0.5 * (grid - abar_prev.sqrt() * x0) ** 2 / (1 - abar_prev)
    log_lik = -0.5 * (x_t - alpha.sqrt() * grid) ** 2 / beta
    w = torch.softmax(log_prior + log_lik, 0)
    bayes_mean = (w * grid).sum()
    bayes_var = (w * (grid - bayes_mean) ** 2).sum()
    mean, var = diffusion.q_posterior(torch.tensor([[x0]]), torch.tensor([[x_t]]), t)
    assert mean.item() == pytest.approx(bayes_mean.item(), abs=1e-5)
    assert var.item() == pytest.approx(bayes_var.item(), rel=1e-3)


def test_posterior_at_first_step_is_x0_with_zero_variance(diffusion):
    x0, x_t = torch.randn(5, 2, generator=g()), torch.randn(5, 2, generator=g(1))
    mean, var = diffusion.q_posterior(x0, x_t, 0)
    torch.testing.assert_close(mean, x0)
    assert torch.all(var == 0)
    assert diffusion.posterior_variance[1] > 0


def oracle_for(diffusion, x0, noise):
    """An ε-model that returns the true noise used to make x_t."""
    return lambda x_t, t: noise


@pytest.mark.parametrize("t", [0, 1, 500, 999])
def test_oracle_noise_recovers_the_true_posterior_mean(diffusion, t):
    x0 = torch.randn(8, 1, 4, 4, generator=g(10))
    noise = torch.randn(8, 1, 4, 4, generator=g(11))
    x_t = diffusion.q_sample(x0, t, noise)
    out = diffusion.p_mean_variance(oracle_for(diffusion, x0, noise), x_t, t)
    true_mean, _ = diffusion.q_posterior(x0, x_t, t)
    torch.testing.assert_close(out["mean"], true_mean, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(out["pred_x0"], x0, atol=2e-2 if t == 999 else 1e-4, rtol=1e-4)


def test_reverse_step_at_first_index_adds_no_noise_and_returns_x0(diffusion):
    x0 = torch.randn(6, 3, generator=g(12))
    noise = torch.randn(6, 3, generator=g(13))
    x1 = diffusion.q_sample(x0, 0, noise)
    out = diffusion.p_sample(oracle_for(diffusion, x0, noise), x1, 0, generator=g(14))
    torch.testing.assert_close(out["sample"], x0, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variance,buffer", [("beta", "betas"), ("beta_tilde", "posterior_variance")])
def test_reverse_variance_is_the_chosen_bound(variance, buffer):
    d = GaussianDiffusion(timesteps=100, variance=variance)
    x = torch.zeros(100_000, 1)
    t = 40
    out = d.p_sample(lambda x_t, t: torch.zeros_like(x_t), x, t, generator=g(15))
    expected = getattr(d, buffer)[t].item()
    assert out["variance"].flatten()[0].item() == pytest.approx(expected)
    assert out["sample"].var().item() == pytest.approx(expected, rel=0.02)


def test_unknown_variance_and_bad_timesteps_are_refused(diffusion):
    with pytest.raises(ValueError, match="beta_tilde"):
        GaussianDiffusion(timesteps=10, variance="learned")
    x = torch.zeros(2, 3)
    for bad in (-1, diffusion.num_timesteps):
        with pytest.raises(ValueError, match="out of range"):
            diffusion.q_sample(x, bad)
    with pytest.raises(ValueError, match="shape"):
        diffusion.q_sample(x, torch.tensor([1, 2, 3]))


def test_loss_is_zero_for_the_oracle_and_one_for_predicting_zero(diffusion):
    x0 = torch.randn(4096, 2, generator=g(16))
    noise = torch.randn(4096, 2, generator=g(17))
    assert diffusion.p_losses(lambda x_t, t: noise, x0, noise=noise).item() < 1e-10
    zero_loss = diffusion.p_losses(lambda x_t, t: torch.zeros_like(x_t), x0, generator=g(18))
    assert zero_loss.item() == pytest.approx(1.0, abs=0.05)  # E‖ε‖²/d = 1
    per_example = diffusion.p_losses(lambda x_t, t: torch.zeros_like(x_t), x0[:3],
                                     noise=noise[:3], reduction="none")
    torch.testing.assert_close(per_example, (noise[:3] ** 2).mean(1))


def test_loss_draws_t_uniformly_over_all_steps(diffusion):
    seen = []
    def model(x_t, t):
        seen.append(t)
        return torch.zeros_like(x_t)
    diffusion.p_losses(model, torch.zeros(200_000, 1), generator=g(19))
    t = torch.cat(seen)
    assert t.min().item() == 0 and t.max().item() == diffusion.num_timesteps - 1
    assert t.float().mean().item() == pytest.approx((diffusion.num_timesteps - 1) / 2, rel=0.01)


def test_kl_term_equals_weighted_noise_mse():
    """L_{t−1} = KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t)) = λ_t ‖ε − ε_θ‖² when σ_t² = β̃_t."""
    d = GaussianDiffusion(timesteps=1000, variance="beta_tilde")
    x0 = torch.randn(4, 5, generator=g(20)).double()
    noise = torch.randn(4, 5, generator=g(21)).double()
    eps_theta = noise + 0.3 * torch.randn(4, 5, generator=g(22)).double()
    d = d.double()
    for t in (1, 100, 900):
        x_t = d.q_sample(x0, t, noise)
        q_mean, q_var = d.q_posterior(x0, x_t, t)
        p = d.p_mean_variance(lambda x, tt: eps_theta, x_t, t)
        kl = normal_kl(q_mean, q_var, p["mean"], p["variance"]).sum(1)
        expected = d.elbo_weights()[t] * ((noise - eps_theta) ** 2).sum(1)
        torch.testing.assert_close(kl, expected, rtol=1e-3, atol=1e-8)  # float32 buffers


def test_ddim_with_eta_one_is_the_ddpm_posterior_step(diffusion):
    x_t = torch.randn(16, 3, generator=g(23))
    eps = torch.randn(16, 3, generator=g(24))
    z = torch.randn(16, 3, generator=g(25))
    t = 321
    mean = diffusion.ddim_step(x_t, t, t - 1, eps, eta=1.0, noise=torch.zeros_like(z))
    pred_x0 = diffusion.predict_x0_from_eps(x_t, t, eps)
    expected_mean, _ = diffusion.q_posterior(pred_x0, x_t, t)
    torch.testing.assert_close(mean, expected_mean, atol=1e-5, rtol=1e-5)
    noisy = diffusion.ddim_step(x_t, t, t - 1, eps, eta=1.0, noise=z)
    sigma = ((noisy - mean) / z).mean().item()
    assert sigma ** 2 == pytest.approx(diffusion.posterior_variance[t].item(), rel=1e-3)


def test_score_from_eps_matches_conditional_score(diffusion):
    x0 = torch.randn(10, 2, generator=g(26))
    noise = torch.randn(10, 2, generator=g(27))
    t = 250
    x_t = diffusion.q_sample(x0, t, noise)
    mean, var = diffusion.q_mean_variance(x0, t)
    torch.testing.assert_close(diffusion.score_from_eps(x_t, t, noise), -(x_t - mean) / var,
                               atol=1e-4, rtol=1e-4)


def test_buffers_follow_the_module_to_another_dtype():
    d = GaussianDiffusion(timesteps=10).to(torch.float64)
    assert d.alphas_cumprod.dtype == torch.float64
    assert "alphas_cumprod" not in d.state_dict()  # derived from the schedule, not saved


def test_float64_inputs_give_float64_moments(diffusion):
    x0 = torch.randn(3, 2, dtype=torch.float64)
    mean, var = diffusion.q_posterior(x0, x0, 5)
    assert mean.dtype == var.dtype == torch.float64
    mean, var = diffusion.q_mean_variance(x0, 5)
    assert mean.dtype == var.dtype == torch.float64
