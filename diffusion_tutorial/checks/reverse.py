"""Checks for the reverse process: the true posterior, the model's mean from a noise
prediction, one ancestral (DDPM) step. Chapter: The reverse process."""
from __future__ import annotations

import torch

from ..diffusion import extract
from ..schedules import alphas_cumprod_from_betas
from .cases import (T_CHECK, Case, call_unmodified, generator, parts_from_cases, random_timesteps,
                    timestep_cases, with_cosine_case)
from .harness import (ALPHAS_CUMPROD_PREV_WRAPS, CheckResult, Stop, compare, diffusion_for, not_a_tensor,
                      run_check, shift_mistakes, _reference_ddpm_step, _reference_mean_from_eps,
                      _reference_posterior)


MEAN = "μ_θ = (1/√α_t) · (x_t − β_t/√(1 − ᾱ_t) · ε_θ), α_t = 1 − β_t (DDPM eq. 11)"
POSTERIOR_MEAN = "μ̃_t = √ᾱ_{t−1} β_t/(1 − ᾱ_t) · x0 + √α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t) · x_t (DDPM eq. 7)"
POSTERIOR_VARIANCE = "β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t), with ᾱ_{t−1} = 1 at t = 0 (DDPM eq. 7)"
BETA_FOR_ONE_MINUS_ALPHAS_CUMPROD = (
    "β_t is used where the equation has 1 − ᾱ_t: β_t is the variance one step adds, 1 − ᾱ_t "
    "the variance of all t steps together (they agree only at the first step)")


def _mean_mistakes(x_t, t, eps, betas, T):
    """Known mistakes in μ_θ = (1/√α_t)(x_t − β_t/√(1 − ᾱ_t) ε), as (message, value) pairs."""
    b64 = betas.detach().double().cpu()
    b = extract(b64.to(x_t), t, x_t.shape)
    a = extract((1 - b64).to(x_t), t, x_t.shape)
    ab = extract(alphas_cumprod_from_betas(b64).to(x_t), t, x_t.shape)
    return [
        (f"missing square root on α_t: divide by √α_t, not α_t. {MEAN}.",
         (x_t - b / (1 - ab).sqrt() * eps) / a),
        (f"missing square root on 1 − ᾱ_t: the coefficient of ε is β_t/√(1 − ᾱ_t). {MEAN}.",
         (x_t - b / (1 - ab) * eps) / a.sqrt()),
        (f"the coefficient of ε is β_t/√(1 − ᾱ_t), not √(1 − ᾱ_t). {MEAN}.",
         (x_t - (1 - ab).sqrt() * eps) / a.sqrt()),
        (f"{BETA_FOR_ONE_MINUS_ALPHAS_CUMPROD}: the coefficient of ε is β_t/√(1 − ᾱ_t), not "
         f"β_t/√β_t = √β_t. {MEAN}.", (x_t - b.sqrt() * eps) / a.sqrt()),
        (f"{BETA_FOR_ONE_MINUS_ALPHAS_CUMPROD}: the coefficient of ε is β_t/√(1 − ᾱ_t), not "
         f"β_t/β_t = 1. {MEAN}.", (x_t - eps) / a.sqrt()),
        (f"ᾱ_t (alphas_cumprod) used in the prefactor: it is 1/√α_t with α_t = 1 − β_t. {MEAN}.",
         (x_t - b / (1 - ab).sqrt() * eps) / ab.sqrt()),
        (f"you returned the predicted clean image x̂_0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t; μ_θ is the "
         f"mean of x_{{t−1}}: {MEAN}.", (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()),
        (f"wrong sign: subtract the noise term. {MEAN}.",
         (x_t + b / (1 - ab).sqrt() * eps) / a.sqrt()),
        (f"multiply by 1/√α_t, not by √α_t. {MEAN}.", (x_t - b / (1 - ab).sqrt() * eps) * a.sqrt()),
    ] + shift_mistakes(lambda tt: _reference_mean_from_eps(x_t, tt, eps, betas), t, T)


def check_posterior(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(x0, x_t, t, betas) -> (mean, variance)``, the true posterior
    q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (DDPM eqs. 6–7):

        μ̃_t = √ᾱ_{t−1} β_t/(1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t) · x_t
        β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t),   with ᾱ_{t−1} = 1 at t = 0 (so β̃ = 0 there)

    x0, x_t: (B, ...); t: (B,) long 0-based; betas: (T,). The mean is shaped like x_t; the
    variance like x_t or (B, 1, ..., 1). Chapter: The reverse process."""
    def run_case(fn, case: Case):
        betas, abar, x0, x_t, t = case.draw(seed)
        out, changed = call_unmodified(fn, [x0, x_t, t, betas])
        if changed:
            return changed
        if out is Ellipsis or not isinstance(out, (tuple, list)) or len(out) != 2:
            return not_a_tensor(out) or Stop("return a pair (mean, variance), e.g. "
                                             "`return mean, variance`.")
        mean, var = out
        ref_mean, ref_var = _reference_posterior(x0, x_t, t, betas)
        b64 = betas.detach().double().cpu()
        ab64 = alphas_cumprod_from_betas(b64)
        b, a, ab = (extract(v.to(x_t), t, x_t.shape) for v in (b64, 1 - b64, ab64))
        abp = extract(torch.cat([ab64.new_ones(1), ab64[:-1]]).to(x_t), t, x_t.shape)
        abw = extract(ab64.to(x_t), (t - 1) % case.T, x_t.shape)  # ᾱ_{t−1} from a wrapped index
        mean_of = lambda p: (p.sqrt() * b / (1 - ab) * x0 + a.sqrt() * (1 - p) / (1 - ab) * x_t)  # noqa: E731
        shift = lambda k: _reference_posterior(x0, x_t, k, betas)  # noqa: E731
        mean_mistakes = [
            (f"the coefficients are swapped: {POSTERIOR_MEAN}.",
             a.sqrt() * (1 - abp) / (1 - ab) * x0 + abp.sqrt() * b / (1 - ab) * x_t),
            (f"missing square root on ᾱ_{{t−1}} in the coefficient of x0. {POSTERIOR_MEAN}.",
             abp * b / (1 - ab) * x0 + a.sqrt() * (1 - abp) / (1 - ab) * x_t),
            (f"missing square root on α_t in the coefficient of x_t. {POSTERIOR_MEAN}.",
             abp.sqrt() * b / (1 - ab) * x0 + a * (1 - abp) / (1 - ab) * x_t),
            (f"ᾱ_t used where the equation has ᾱ_{{t−1}}. {POSTERIOR_MEAN}.", mean_of(ab)),
            (f"{BETA_FOR_ONE_MINUS_ALPHAS_CUMPROD}. {POSTERIOR_MEAN}.",
             abp.sqrt() * x0 + a.sqrt() * (1 - abp) / b * x_t),
            (ALPHAS_CUMPROD_PREV_WRAPS, mean_of(abw) if case.t == "first" else None),
        ] + [(m.replace("your result", "your mean"), v[0])
             for m, v in shift_mistakes(shift, t, case.T)]
        message = compare(mean, ref_mean, mean_mistakes, like=x_t, what="the mean",
                          equation=POSTERIOR_MEAN)
        if message:
            return message
        problem = not_a_tensor(var, "the variance")
        if problem:
            return problem
        try:
            var = var.expand_as(x_t)
        except RuntimeError:
            return (f"the variance has shape {tuple(var.shape)}: give it the shape of x_t or "
                    "(B, 1, ..., 1) so it broadcasts against x_t.")
        var_mistakes = [
            (f"the variance is β_t; the posterior variance is {POSTERIOR_VARIANCE}.", b.expand_as(x_t)),
            (f"you returned the standard deviation √β̃_t; return the variance {POSTERIOR_VARIANCE}.",
             ref_var.sqrt()),
            (f"{BETA_FOR_ONE_MINUS_ALPHAS_CUMPROD}. {POSTERIOR_VARIANCE}.", (1 - abp).expand_as(x_t)),
            (ALPHAS_CUMPROD_PREV_WRAPS,
             (b * (1 - abw) / (1 - ab)).expand_as(x_t) if case.t == "first" else None),
        ] + [(m.replace("your result", "your variance"), v[1])
             for m, v in shift_mistakes(shift, t, case.T)]
        return compare(var, ref_var, var_mistakes, like=x_t, what="the variance", equation=POSTERIOR_VARIANCE)

    parts = parts_from_cases(with_cosine_case(timestep_cases()), run_case)
    return run_check("check_posterior", fn, "fn(x0, x_t, t, betas)", parts, strict, verbose)


def check_mean_from_eps(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, t, eps, betas) -> mean``, the model's mean of x_{t−1}:

        μ_θ(x_t, t) = (1/√α_t) · (x_t − β_t/√(1 − ᾱ_t) · ε_θ)     (DDPM eq. 11)

    x_t, eps: (B, ...); t: (B,) long 0-based; betas: (T,), α_t = 1 − β_t and
    ᾱ_t = ∏_{s≤t} α_s. Returns a tensor shaped like x_t. Chapter: The reverse process."""
    def run_case(fn, case: Case):
        betas, _, x_t, eps, t = case.draw(seed)
        out, changed = call_unmodified(fn, [x_t, t, eps, betas])
        if changed:
            return changed
        ref = _reference_mean_from_eps(x_t, t, eps, betas)
        return compare(out, ref, _mean_mistakes(x_t, t, eps, betas, case.T), like=x_t, what="μ_θ",
                       equation=MEAN)

    parts = parts_from_cases(with_cosine_case(timestep_cases()), run_case)
    return run_check("check_mean_from_eps", fn, "fn(x_t, t, eps, betas)", parts, strict, verbose)


def check_ddpm_step(fn, *, variance: str = "beta", strict: bool = False, verbose: bool = True,
                    seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, t, eps, betas, z) -> x_prev``, one ancestral step (DDPM Algorithm 2):

        x_{t−1} = μ_θ(x_t, t) + σ_t z,   σ_t² = β_t,   and z = 0 at the first step (t = 0)

    μ_θ as in :func:`check_mean_from_eps`. x_t, eps, z: (B, ...); t: (B,) long 0-based and
    may differ per example (mask the noise where t == 0); betas: (T,). ``variance``
    chooses σ_t² for the check: ``"beta"`` (β_t) or ``"beta_tilde"`` (β̃_t).
    Chapter: The reverse process."""
    other = {"beta": "beta_tilde", "beta_tilde": "beta"}[variance]
    names = {"beta": "σ_t² = β_t", "beta_tilde": "σ_t² = β̃_t"}
    step = (f"x_{{t−1}} = μ_θ(x_t, t) + σ_t z with {names[variance]}, and z = 0 at t = 0 "
            f"(DDPM Algorithm 2), where {MEAN}")

    def run_case(fn, case: Case):
        g = generator(seed)
        betas, _ = case.betas_and_alphas_cumprod()
        x_t, eps, z = (case.randn(g) for _ in range(3))
        if case.t == "mixed":
            t = random_timesteps(case.shape[0], case.T, g, case.device)
            t[::2] = 0
        else:
            t = case.timesteps(g)
        out, changed = call_unmodified(fn, [x_t, t, eps, betas, z])
        if changed:
            return changed
        ref = _reference_ddpm_step(x_t, t, eps, betas, z, variance)
        d = diffusion_for(betas, case.device, variance)
        mean = d.mean_from_eps(x_t, t, eps)
        var = extract(d.model_variance.to(x_t), t, x_t.shape)
        mask = (t > 0).to(case.dtype).view(-1, *[1] * (x_t.ndim - 1))
        mistakes = [
            ("noise added at the first step: at t = 0 (paper t = 1) return μ_θ with no "
             f"noise (z = 0), DDPM Algorithm 2; use a mask such as (t > 0). {step}.",
             mean + var.sqrt() * z),
            (f"z is ignored: add σ_t · z (except at t = 0). {step}.", mean),
            ("z is multiplied by the variance σ_t²; multiply it by the standard deviation σ_t. "
             f"{step}.", mean + mask * var * z),
            (f"your step uses {names[other]}, this check expects {names[variance]} (call "
             f"check_ddpm_step(fn, variance={other!r}) if your course uses {names[other]}).",
             _reference_ddpm_step(x_t, t, eps, betas, z, other)),
        ] + [(f"in μ_θ, {m}", v + mask * var.sqrt() * z)
             for m, v in _mean_mistakes(x_t, t, eps, betas, case.T)]
        return compare(out, ref, mistakes, like=x_t, what="x_{t−1}", equation=step)

    cases = timestep_cases()
    cases.insert(1, Case("per-example t (t = 0 for some)", t="mixed", T=T_CHECK))
    parts = parts_from_cases(with_cosine_case(cases), run_case)
    return run_check("check_ddpm_step", fn, "fn(x_t, t, eps, betas, z)", parts, strict, verbose)
