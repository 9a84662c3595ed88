"""DPM-Solver++(2M) and Heun against diffusers step for step, and against the exact
probability-flow ODE of Gaussian data.

diffusers (``DPMSolverMultistepScheduler`` with ``algorithm_type="dpmsolver++"``,
``solver_order=2``; ``HeunDiscreteScheduler``) is an independent implementation. Both run
the same deterministic model, a smooth nonlinear function of (x, t), for every prediction
type. For data x_0 ~ N(μ, c² I) the exact ε-predictor is known,
ε*(x_t, t) = √(1 − ᾱ_t) (x_t − √ᾱ_t μ) / (ᾱ_t c² + 1 − ᾱ_t), and the ODE's exact solution
keeps z = (x̂ − μ)/√(c² + σ²) constant (x̂ = x_t/√ᾱ_t, σ² = (1 − ᾱ_t)/ᾱ_t): every solver's
error can be measured, not guessed.
"""
import math

import pytest
import torch

from diffusion_tutorial import GaussianDiffusion, ddim_sample, sample
from diffusion_tutorial.ode_samplers import (dpm_solver_2m_step, dpm_solver_sample, evaluations,
                                             heun_sample, solver_timesteps)
from diffusion_tutorial.samplers import ddim_timesteps

T = 1000
DIFFUSERS_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def toy_model(x, t):
    """A fixed, smooth, t-dependent stand-in for a network."""
    tt = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *[1] * (x.ndim - 1))
    return 0.8 * torch.tanh(x) + 0.2 * torch.cos(tt / 150) * x.roll(1, dims=-1)


def _x_T(n=3):
    return torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(0))


def _scheduler(cls, prediction, **kw):
    return cls(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
               prediction_type=DIFFUSERS_TYPES[prediction], **kw)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("steps", [5, 10, 25])
def test_dpm_solver_matches_diffusers_step_for_step(prediction, steps):
    diffusers = pytest.importorskip("diffusers")
    sched = _scheduler(diffusers.DPMSolverMultistepScheduler, prediction, algorithm_type="dpmsolver++",
                       solver_order=2, lower_order_final=True, final_sigmas_type="zero")
    sched.set_timesteps(steps)
    assert sched.timesteps.tolist() == solver_timesteps(T, steps)        # the same spacing
    diffusion = GaussianDiffusion(timesteps=T, prediction=prediction)
    schedule = solver_timesteps(T, steps)
    ours = theirs = _x_T()
    x0_before = t_before = None
    for i, t in enumerate(schedule):
        t_prev = schedule[i + 1] if i + 1 < steps else -1
        tt = torch.full((ours.shape[0],), t)
        x0 = diffusion.x0_from_output(ours, tt, toy_model(ours, tt))
        ours = dpm_solver_2m_step(diffusion, ours, t, t_prev, x0, x0_before, t_before)
        x0_before, t_before = x0, t
        theirs = sched.step(toy_model(theirs, tt), t, theirs).prev_sample
        assert (ours - theirs).abs().max().item() < 2e-4 * max(1.0, theirs.abs().max().item()), \
            f"step {i} (t={t} -> {t_prev})"
    full = dpm_solver_sample(diffusion, toy_model, (3, 1, 6, 6), steps=steps, x_T=_x_T(), progress=False)
    torch.testing.assert_close(full, ours, atol=1e-6, rtol=0)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_sde_dpm_solver_matches_diffusers_with_the_same_noise(prediction):
    diffusers = pytest.importorskip("diffusers")
    steps = 10
    sched = _scheduler(diffusers.DPMSolverMultistepScheduler, prediction, algorithm_type="sde-dpmsolver++",
                       solver_order=2, lower_order_final=True, final_sigmas_type="zero")
    sched.set_timesteps(steps)
    diffusion = GaussianDiffusion(timesteps=T, prediction=prediction)
    schedule = solver_timesteps(T, steps)
    ours = theirs = _x_T()
    x0_before = t_before = None
    g = torch.Generator().manual_seed(7)
    for i, t in enumerate(schedule):
        t_prev = schedule[i + 1] if i + 1 < steps else -1
        z = torch.randn(ours.shape, generator=g)
        tt = torch.full((ours.shape[0],), t)
        x0 = diffusion.x0_from_output(ours, tt, toy_model(ours, tt))
        ours = dpm_solver_2m_step(diffusion, ours, t, t_prev, x0, x0_before, t_before,
                                  noise=z if t_prev >= 0 else None)
        x0_before, t_before = x0, t
        theirs = sched.step(toy_model(theirs, tt), t, theirs, variance_noise=z).prev_sample
        assert (ours - theirs).abs().max().item() < 2e-4 * max(1.0, theirs.abs().max().item()), f"step {i}"
    # the first-order stochastic step is DDIM with η = 1
    x, z = _x_T(), torch.randn(3, 1, 6, 6, generator=g)
    eps = toy_model(x, torch.full((3,), 600))
    x0 = GaussianDiffusion(timesteps=T).predict_x0_from_eps(x, 600, eps)
    torch.testing.assert_close(dpm_solver_2m_step(GaussianDiffusion(timesteps=T), x, 600, 300, x0, noise=z),
                               GaussianDiffusion(timesteps=T).ddim_step(x, 600, 300, eps, eta=1.0, noise=z),
                               atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("steps", [4, 10])
def test_heun_matches_diffusers(prediction, steps):
    diffusers = pytest.importorskip("diffusers")
    sched = _scheduler(diffusers.HeunDiscreteScheduler, prediction)
    schedule = ddim_timesteps(T, steps)
    sched.set_timesteps(timesteps=schedule)
    assert len(sched.timesteps) == evaluations("heun", steps)
    diffusion = GaussianDiffusion(timesteps=T, prediction=prediction)
    x_hat = _x_T() * sched.init_noise_sigma                     # x̂_T = x_T / √ᾱ_T
    calls = []

    def counted(x, t):
        calls.append(int(t[0]))
        return toy_model(x, t)
    ours = heun_sample(diffusion, counted, (3, 1, 6, 6), steps=steps, x_T=_x_T(), progress=False)
    for t in sched.timesteps:
        model_in = sched.scale_model_input(x_hat, t)            # x_t = √ᾱ_t x̂
        x_hat = sched.step(toy_model(model_in, t.expand(3)), t, x_hat).prev_sample
    assert calls == [int(t) for t in sched.timesteps]           # the same evaluations in order
    assert (ours - x_hat).abs().max().item() < 2e-4 * max(1.0, x_hat.abs().max().item())


# ---------------------------------------------------------------------- Gaussian data: exact ODE
MU, C = 0.3, 0.5


def exact_eps(diffusion):
    def model(x, t):
        abar = diffusion.alphas_cumprod.double()[t].view(-1, 1, 1, 1)
        return ((1 - abar).sqrt() * (x - abar.sqrt() * MU) / (abar * C ** 2 + 1 - abar)).to(x.dtype)
    return model


def exact_ode_solution(diffusion, x_T):
    abar = diffusion.alphas_cumprod.double()[-1]
    sigma2 = (1 - abar) / abar
    z = (x_T.double() / abar.sqrt() - MU) / (C ** 2 + sigma2).sqrt()
    return MU + C * z


def _ode_error(fn, steps):
    diffusion = GaussianDiffusion(timesteps=T)
    x_T = torch.randn(256, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = fn(diffusion, exact_eps(diffusion), x_T.shape, steps=steps, x_T=x_T, progress=False)
    return (out - exact_ode_solution(diffusion, x_T)).abs().max().item()


def test_solvers_converge_to_the_exact_ode_solution_at_their_order():
    euler = {n: _ode_error(ddim_sample, n) for n in (10, 20, 40)}       # DDIM, η = 0
    heun = {n: _ode_error(heun_sample, n) for n in (10, 20, 40)}
    dpm = {n: _ode_error(dpm_solver_sample, n) for n in (10, 40)}
    assert heun[40] < 1e-2 and dpm[40] < 1e-2
    # halving the step divides the error by 2 for a first-order method, by 4 for Heun
    assert 1.6 < euler[10] / euler[20] < 2.5 and 1.6 < euler[20] / euler[40] < 2.5, euler
    assert heun[10] / heun[20] > 3.2 and heun[20] / heun[40] > 3.2, heun
    # DPM-Solver++: second order between steps, a first-order last jump to σ = 0 (as in
    # diffusers); four times the steps still cut the error far more than Euler's 4
    assert dpm[10] / dpm[40] > 16, dpm
    # at equal network evaluations both beat Euler (= DDIM)
    assert _ode_error(dpm_solver_sample, 20) < euler[20] / 2
    assert heun[10] < euler[20]                                  # 19 evaluations against 20


def test_dpm_solver_first_order_step_is_ddim():
    """Without the previous prediction, the DPM-Solver++ update is DDIM with η = 0 (Lu et al.
    2022, section 4.1)."""
    diffusion = GaussianDiffusion(timesteps=T)
    x = _x_T()
    for t, t_prev in ((999, 899), (500, 250), (100, 0), (50, -1)):
        eps = toy_model(x, torch.full((3,), t))
        x0 = diffusion.predict_x0_from_eps(x, t, eps)
        torch.testing.assert_close(dpm_solver_2m_step(diffusion, x, t, t_prev, x0),
                                   diffusion.ddim_step(x, t, t_prev, eps, eta=0.0), atol=2e-5, rtol=1e-5)


def test_every_sampler_gives_the_same_samples_for_the_same_denoiser():
    """An ε-model and the same function written as an x_0- or v-model give the same samples."""
    from diffusion_tutorial import parameterization as P
    x_T = _x_T(2)
    for name, steps in (("ddim", 8), ("dpm++2m", 8), ("heun", 4)):
        outs = []
        for kind in ("eps", "x0", "v"):
            d = GaussianDiffusion(timesteps=T, prediction=kind)

            def model(x, t, d=d, kind=kind):
                a, s = d._a_s(t, x.shape)
                eps = toy_model(x, t)
                convert = {"eps": P.eps_from, "x0": P.x0_from, "v": P.v_from}[kind]
                return convert("eps", eps, x, a, s)
            outs.append(sample(d, model, x_T.shape, sampler=name, steps=steps, x_T=x_T, progress=False))
        torch.testing.assert_close(outs[1], outs[0], atol=1e-3, rtol=1e-3, msg=name)
        torch.testing.assert_close(outs[2], outs[0], atol=1e-3, rtol=1e-3, msg=name)


def test_bad_arguments_say_what_to_do():
    d = GaussianDiffusion(timesteps=T)
    x = _x_T()
    with pytest.raises(ValueError, match="t_prev < t"):
        dpm_solver_2m_step(d, x, 10, 20, x)
    with pytest.raises(ValueError, match="steps must be between"):
        solver_timesteps(T, T)
    with pytest.raises(ValueError, match="eta applies to the ddim sampler only"):
        sample(d, toy_model, x.shape, sampler="heun", eta=1.0, progress=False)
    with pytest.raises(ValueError, match="dpm\\+\\+2m"):
        sample(d, toy_model, x.shape, sampler="dpm", progress=False)
    assert math.isclose(evaluations("heun", 10), 19)
