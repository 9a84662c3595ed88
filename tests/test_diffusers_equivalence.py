"""Our forward process, ancestral step and DDIM step against diffusers' schedulers.

diffusers is an independent implementation of the same equations (DDPMScheduler,
DDIMScheduler). Both use 0-based timestep indices, so index t means the same step in
both. Settings that make them comparable: linear β from 1e-4 to 0.02 over T = 1000,
``clip_sample=False``, ``prediction_type="epsilon"``; for DDIM ``set_alpha_to_one=True``
(ᾱ before the first step is 1, our ``t_prev = -1``) and ``steps_offset=0``.
diffusers computes ᾱ_t, and 1 − ᾱ_t from it, in float32; near t = 1, where 1 − ᾱ_t is
about 1e-4, that costs it ~1e-4 relative precision in √(1 − ᾱ_t), so the stock scheduler
differs from ours by up to ~1e-4 there. The ancestral-step tests therefore give diffusers
ᾱ_t computed in float64 from its own β_t (as we do), and then agree to 1e-5; a separate
test bounds the stock difference.
"""
import pytest
import torch

from diffusion_tutorial import GaussianDiffusion

diffusers = pytest.importorskip("diffusers")

T = 1000
TIMESTEPS = [0, 1, 2, 10, 250, 500, 900, 998, 999]
ATOL = 1e-5


def _scheduler(cls, float64_cumprod=False, **kw):
    scheduler = cls(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02,
                    beta_schedule="linear", clip_sample=False, prediction_type="epsilon", **kw)
    if float64_cumprod:  # ᾱ_t as we compute it: a float64 product of (1 − β_s)
        scheduler.alphas_cumprod = torch.cumprod(1 - scheduler.betas.double(), 0)
    return scheduler


@pytest.fixture(scope="module")
def tensors():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(4, 1, 8, 8, generator=g)
    eps = torch.randn(4, 1, 8, 8, generator=g)  # stands in for ε_θ(x_t, t)
    return x0, noise, eps


def test_schedules_agree():
    ours = GaussianDiffusion(schedule="linear", timesteps=T)
    theirs = _scheduler(diffusers.DDPMScheduler)
    torch.testing.assert_close(ours.betas, theirs.betas, atol=0, rtol=1e-6)  # 1 float32 ulp
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("t", TIMESTEPS)
def test_q_sample_matches_add_noise(tensors, t):
    x0, noise, _ = tensors
    ours = GaussianDiffusion(timesteps=T).q_sample(x0, t, noise)
    theirs = _scheduler(diffusers.DDPMScheduler).add_noise(x0, noise, torch.full((4,), t))
    assert (ours - theirs).abs().max().item() < ATOL


@pytest.mark.parametrize("variance,variance_type", [("beta_tilde", "fixed_small"),
                                                     ("beta", "fixed_large")])
@pytest.mark.parametrize("t", TIMESTEPS)
def test_ancestral_step_matches_ddpm_scheduler(tensors, t, variance, variance_type):
    x0, noise, eps = tensors
    diffusion = GaussianDiffusion(timesteps=T, variance=variance)
    scheduler = _scheduler(diffusers.DDPMScheduler, float64_cumprod=True, variance_type=variance_type)
    x_t = diffusion.q_sample(x0, t, noise)
    model = lambda x, tt: eps  # noqa: E731 - a fixed ε_θ
    # Both draw z from a generator with the same seed, so the full steps must agree ...
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))
    out = diffusion.p_sample(model, x_t, t, noise=z)
    step = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(1))
    assert (out["sample"] - step.prev_sample).abs().max().item() < ATOL
    assert (out["pred_x0"] - step.pred_original_sample).abs().max().item() < ATOL * (
        1 / diffusion.sqrt_alphas_cumprod[t].item())  # x̂_0 divides by √ᾱ_t
    # ... and so must the means (z = 0): diffusers' step minus its noise term.
    sigma = diffusion.model_variance[t].sqrt() if t > 0 else 0.0
    assert (out["mean"] - (step.prev_sample - sigma * z)).abs().max().item() < ATOL
    if t == 0:  # the last step adds no noise and returns x̂_0's posterior mean
        assert torch.equal(out["sample"], out["mean"])


@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_step_eta0_matches_ddim_scheduler(tensors, steps):
    x0, noise, eps = tensors
    diffusion = GaussianDiffusion(timesteps=T)
    scheduler = _scheduler(diffusers.DDIMScheduler, set_alpha_to_one=True, steps_offset=0)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps.tolist():
        t_prev = t - T // steps
        x_t = diffusion.q_sample(x0, t, noise)
        ours = diffusion.ddim_step(x_t, t, t_prev if t_prev >= 0 else -1, eps, eta=0.0)
        theirs = scheduler.step(eps, t, x_t, eta=0.0).prev_sample
        assert (ours - theirs).abs().max().item() < ATOL, f"t={t}"


def test_ddim_step_eta1_matches_with_same_noise(tensors):
    x0, noise, eps = tensors
    diffusion = GaussianDiffusion(timesteps=T)
    scheduler = _scheduler(diffusers.DDIMScheduler, set_alpha_to_one=True, steps_offset=0)
    scheduler.set_timesteps(20)
    for t in [int(v) for v in scheduler.timesteps[::4]]:
        x_t = diffusion.q_sample(x0, t, noise)
        ours = diffusion.ddim_step(x_t, t, t - 50 if t >= 50 else -1, eps, eta=1.0,
                                   generator=torch.Generator().manual_seed(3))
        theirs = scheduler.step(eps, t, x_t, eta=1.0,
                                generator=torch.Generator().manual_seed(3)).prev_sample
        assert (ours - theirs).abs().max().item() < ATOL, f"t={t}"


def test_stock_ddpm_scheduler_within_float32_rounding(tensors):
    """With diffusers' own float32 ᾱ_t the steps still agree to float32 round-off (2e-4)."""
    x0, noise, eps = tensors
    diffusion = GaussianDiffusion(timesteps=T, variance="beta_tilde")
    scheduler = _scheduler(diffusers.DDPMScheduler, variance_type="fixed_small")
    worst = 0.0
    for t in TIMESTEPS:
        x_t = diffusion.q_sample(x0, t, noise)
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))
        ours = diffusion.p_sample(lambda x, tt: eps, x_t, t, noise=z)["sample"]
        theirs = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
        worst = max(worst, (ours - theirs).abs().max().item())
    assert 0 < worst < 2e-4
