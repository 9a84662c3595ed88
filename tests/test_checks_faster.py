"""The checks of the faster-samplers chapter: right answers pass, each usual mistake is named."""
import math

import torch

from diffusion_tutorial.checks import check_dpm_solver_step, check_eps_to_v


def eps_to_v(x_t, t, eps, alphas_cumprod):
    """An independent solution, written as a student would."""
    abar = alphas_cumprod[t].view(-1, *[1] * (x_t.ndim - 1))
    return (eps - (1 - abar).sqrt() * x_t) / abar.sqrt()


def dpm_step(x_t, t, t_prev, x0, x0_before, t_before, alphas_cumprod, lam_scale=1.0,
             exp_sign=-1.0, use_before=True, wrap=False):
    """An independent DPM-Solver++(2M) step, with switches for the usual mistakes."""
    if t_prev < 0 and not wrap:
        return x0.clone()

    def a_s_lam(i):
        abar = alphas_cumprod[i].item()
        return math.sqrt(abar), math.sqrt(1 - abar), lam_scale * 0.5 * math.log(abar / (1 - abar))
    _, s_t, lam_t = a_s_lam(t)
    a_p, s_p, lam_p = a_s_lam(t_prev)
    h = lam_p - lam_t
    d = x0
    if x0_before is not None and use_before:
        r = (lam_t - a_s_lam(t_before)[2]) / h
        d = (1 + 1 / (2 * r)) * x0 - x0_before / (2 * r)
    return s_p / s_t * x_t - a_p * (math.exp(exp_sign * h) - 1) * d


def failures(result):
    return " ".join(result.messages)


def test_right_answers_pass():
    assert check_eps_to_v(eps_to_v, verbose=False)
    assert check_dpm_solver_step(dpm_step, verbose=False)


def test_eps_to_v_mistakes_are_named():
    def swapped(x_t, t, eps, abar):
        ab = abar[t].view(-1, *[1] * (x_t.ndim - 1))
        return (eps - ab.sqrt() * x_t) / (1 - ab).sqrt()

    def x_t_as_x0(x_t, t, eps, abar):
        ab = abar[t].view(-1, *[1] * (x_t.ndim - 1))
        return ab.sqrt() * eps - (1 - ab).sqrt() * x_t

    def no_sqrt(x_t, t, eps, abar):
        ab = abar[t].view(-1, *[1] * (x_t.ndim - 1))
        return (eps - (1 - ab) * x_t) / ab

    def off_by_one(x_t, t, eps, abar):
        return eps_to_v(x_t, t - 1, eps, abar)
    assert "swapped" in failures(check_eps_to_v(swapped, verbose=False))
    assert "in place of x_0" in failures(check_eps_to_v(x_t_as_x0, verbose=False))
    assert "missing square roots" in failures(check_eps_to_v(no_sqrt, verbose=False))
    assert "off by one" in failures(check_eps_to_v(off_by_one, verbose=False))
    assert "wrong sign" in failures(check_eps_to_v(lambda *a: -eps_to_v(*a), verbose=False))


def test_dpm_solver_step_mistakes_are_named():
    def with_(**kw):
        return lambda *a: dpm_step(*a, **kw)
    assert "x0_before is ignored" in failures(check_dpm_solver_step(with_(use_before=False), verbose=False))
    assert "twice too large" in failures(check_dpm_solver_step(with_(lam_scale=2.0), verbose=False))
    assert "e^{+h}" in failures(check_dpm_solver_step(with_(exp_sign=1.0), verbose=False))
    assert "wraps around" in failures(check_dpm_solver_step(with_(wrap=True), verbose=False))
    first_order_ok = check_dpm_solver_step(with_(use_before=False), verbose=False)
    assert [p.passed for p in first_order_ok.parts][:1] == [True]     # the first-order part passes


def test_a_stub_stops_early():
    result = check_dpm_solver_step(lambda *a: ..., verbose=False)
    assert not result and "placeholder" in failures(result)
    assert any(p.passed is None for p in result.parts)
