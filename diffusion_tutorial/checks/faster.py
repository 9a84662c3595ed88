"""Checks for the faster samplers chapter: ε to v, and one DPM-Solver++(2M) step.
Chapter: Faster: what to predict, how to weight, how to solve."""
from __future__ import annotations

import math

import torch

from .. import parameterization as P
from ..diffusion import extract
from ..ode_samplers import dpm_solver_2m_step
from .cases import (Case, call_unmodified, generator, other_devices, parts_from_cases,
                    timestep_cases, with_cosine_case)
from .harness import (CheckResult, _betas_from_alphas_cumprod, compare, diffusion_for, run_check,
                      shift_mistakes)


def _reference_eps_to_v(x_t, t, eps, alphas_cumprod):
    d = diffusion_for(_betas_from_alphas_cumprod(alphas_cumprod), x_t.device)
    return P.v_from("eps", eps, x_t, *d._a_s(t, x_t.shape))


def _reference_dpm_solver_step(x_t, t, t_prev, x0, x0_before, t_before, alphas_cumprod):
    d = diffusion_for(_betas_from_alphas_cumprod(alphas_cumprod), x_t.device)
    return dpm_solver_2m_step(d, x_t, t, t_prev, x0, x0_before, t_before)


def check_eps_to_v(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, t, eps, alphas_cumprod) -> v``, the velocity a noise prediction implies
    (Salimans & Ho 2022, appendix D):

        v = √ᾱ_t ε − √(1 − ᾱ_t) x̂_0,  x̂_0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t,
        so v = (ε − √(1 − ᾱ_t) x_t) / √ᾱ_t.

    x_t, eps: (B, ...); t: (B,) long 0-based; alphas_cumprod: (T,)."""
    def run_case(fn, case: Case):
        _, abar, x_t, eps, t = case.draw(seed)
        out, changed = call_unmodified(fn, [x_t, t, eps, abar])
        if changed:
            return changed
        ref = _reference_eps_to_v(x_t, t, eps, abar)
        ab = extract(abar.detach().double().to(x_t.device), t, x_t.shape).to(x_t.dtype)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        mistakes = [
            ("wrong sign: v = (ε − √(1 − ᾱ_t) x_t)/√ᾱ_t, the noise minus the scaled input.",
             (s * x_t - eps) / a),
            ("x_t is used in place of x_0: v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 needs the clean image "
             "x̂_0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t, not the noisy input.", a * eps - s * x_t),
            ("missing square roots: a_t = √ᾱ_t and s_t = √(1 − ᾱ_t), not ᾱ_t and 1 − ᾱ_t.",
             (eps - (1 - ab) * x_t) / ab),
            ("√ᾱ_t and √(1 − ᾱ_t) are swapped: v = (ε − √(1 − ᾱ_t) x_t)/√ᾱ_t.", (eps - a * x_t) / s),
            ("the division by √ᾱ_t is missing: v = (ε − √(1 − ᾱ_t) x_t)/√ᾱ_t.", eps - s * x_t),
            ("this is x̂_0, not v: v = √ᾱ_t ε − √(1 − ᾱ_t) x̂_0.", (x_t - s * eps) / a),
        ] + shift_mistakes(lambda tt: _reference_eps_to_v(x_t, tt, eps, abar), t, case.T)
        return compare(out, ref, mistakes, like=x_t, what="v")

    cases = with_cosine_case(timestep_cases())
    return run_check("check_eps_to_v", fn, "fn(x_t, t, eps, alphas_cumprod)",
                     parts_from_cases(cases, run_case), strict, verbose)


def _dpm_by_hand(x_t, x0, x0_before, a_s_lam, t, t_prev, t_before, *, lam_scale=1.0,
                 exp_sign=-1.0, h_sign=1.0, invert_r=False, alpha_at_t=False, invert_sigma=False):
    """The DPM-Solver++(2M) step written out, with switches that reproduce the usual mistakes."""
    _, s_t, lam_t = a_s_lam(t)
    a_t = a_s_lam(t)[0]
    a_p, s_p, lam_p = a_s_lam(t_prev)
    h = h_sign * lam_scale * (lam_p - lam_t)
    d = x0
    if x0_before is not None:
        h_before = lam_scale * (lam_t - a_s_lam(t_before)[2])
        r = h / h_before if invert_r else h_before / h
        d = (1 + 1 / (2 * r)) * x0 - x0_before / (2 * r)
    ratio = s_t / s_p if invert_sigma else s_p / s_t
    return ratio * x_t - (a_t if alpha_at_t else a_p) * math.expm1(exp_sign * h) * d


def check_dpm_solver_step(fn, *, strict: bool = False, verbose: bool = True,
                          seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, t, t_prev, x0, x0_before, t_before, alphas_cumprod) -> x_prev``, one
    DPM-Solver++(2M) step from index t to t_prev < t (Lu et al. 2022, Algorithm 2):

        λ = log(√ᾱ / √(1 − ᾱ)),  h = λ_prev − λ_t,  r = (λ_t − λ_before) / h
        D = x0                                   if x0_before is None (first order)
        D = (1 + 1/(2r)) x0 − x0_before / (2r)   otherwise
        x_prev = (√(1 − ᾱ_prev)/√(1 − ᾱ_t)) x_t − √ᾱ_prev (e^{−h} − 1) D

    and x_prev = x0 at t_prev = −1 (the step to the clean image). t, t_prev, t_before are
    ints (0-based; t_before > t is the previous step's index, None with x0_before None);
    x_t, x0, x0_before: (B, ...); alphas_cumprod: (T,)."""
    def run_case(fn, case: Case):
        order, span = case.options.get("order", 2), case.options.get("span", 10)
        g = generator(seed)
        _, abar = case.betas_and_alphas_cumprod()
        x_t, x0, x0_before = case.randn(g), case.randn(g), case.randn(g)
        t = case.T - 1 - span if case.t != "to_x0" else span // 2
        t_prev = -1 if case.t == "to_x0" else t - span
        t_before = t + span if order == 2 else None
        x0_before = x0_before if order == 2 else None
        out, changed = call_unmodified(fn, [x_t, t, t_prev, x0, x0_before, t_before, abar])
        if changed:
            return changed
        ref = _reference_dpm_solver_step(x_t, t, t_prev, x0, x0_before, t_before, abar)
        ab64 = abar.detach().double().cpu().tolist()

        def a_s_lam(i, wrap=False):
            if i < 0 and not wrap:
                return 1.0, 0.0, math.inf
            a, s = math.sqrt(ab64[i]), math.sqrt(1 - ab64[i])
            return a, s, math.log(a / s)
        if case.t == "to_x0":
            wrapped = ("at t_prev = −1 the step goes to the clean image: √(1 − ᾱ_prev) = 0 and "
                       "e^{−h} = 0, so x_prev = x0; alphas_cumprod[-1] wraps around to ᾱ_T instead.")
            mistakes = [(wrapped, _dpm_by_hand(x_t, x0, before, lambda i: a_s_lam(i, wrap=True), t,
                                               t_prev, t_before if before is not None else None))
                        for before in (None, x0_before)]
            mistakes.append(("x_prev is x_t at t_prev = −1: the step to the clean image returns x0.", x_t))
            return compare(out, ref, mistakes, like=x_t, what="x_prev")
        def by_hand(**kw):
            return _dpm_by_hand(x_t, x0, x0_before, a_s_lam, t, t_prev, t_before, **kw)
        mistakes = [
            ("x0_before is ignored: with the previous prediction given, D = (1 + 1/(2r)) x0 − "
             "x0_before/(2r), the second-order step.",
             _dpm_by_hand(x_t, x0, None, a_s_lam, t, t_prev, None) if order == 2 else None),
            ("λ is the log of ᾱ/(1 − ᾱ), twice too large: λ = log(√ᾱ/√(1 − ᾱ)), half the log-SNR.",
             by_hand(lam_scale=2.0)),
            ("e^{+h} instead of e^{−h}: x_prev = (σ_prev/σ_t) x_t − √ᾱ_prev (e^{−h} − 1) D.",
             by_hand(exp_sign=1.0)),
            ("h has the wrong sign: h = λ_prev − λ_t > 0 (λ grows as the noise falls).",
             by_hand(h_sign=-1.0)),
            ("r is inverted: r = (λ_t − λ_before)/h, the previous step over this one.",
             by_hand(invert_r=True) if order == 2 else None),
            ("√ᾱ_t where √ᾱ_prev belongs: the D term is −√ᾱ_prev (e^{−h} − 1) D.",
             by_hand(alpha_at_t=True)),
            ("the x_t coefficient is inverted: it is √(1 − ᾱ_prev)/√(1 − ᾱ_t) (< 1).",
             by_hand(invert_sigma=True)),
        ]
        return compare(out, ref, mistakes, like=x_t, what="x_prev")

    img = (4, 1, 5, 6)
    cases = [Case("first step (first order)", options=dict(order=1)),
             Case("second-order step", options=dict(order=2)),
             Case("last step to x_0 (t_prev = −1)", t="to_x0", options=dict(order=2)),
             Case("second-order step, 3 indices apart", options=dict(order=2, span=3)),
             Case("batch of 1", (1, 3, 4, 4)),
             Case("2-D points (5, 2)", (5, 2)),
             Case("float64", img, torch.float64),
             Case("cosine schedule, T = 50", schedule="cosine", T=50)]
    cases += [Case(f"on {d}", device=d) for d in other_devices()]
    return run_check("check_dpm_solver_step", fn,
                     "fn(x_t, t, t_prev, x0, x0_before, t_before, alphas_cumprod)",
                     parts_from_cases(cases, run_case), strict, verbose)
