"""Checks for the samplers: one DDIM step. Chapter: Sampling."""
from __future__ import annotations

import torch

from ..diffusion import extract
from .cases import Case, call_unmodified, generator, other_devices, parts_from_cases, random_timesteps
from .harness import CheckResult, compare, run_check, _reference_ddim_step


DDIM = ("x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ_t²) ε + σ_t z, with x̂_0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t "
        "and σ_t = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) (DDIM eqs. 12 and 16)")


def _ddim_by_hand(x, ab, abp, eps, eta, z, sqrt_x0=True, minus_sigma=True, noise=True,
                  clip=None, recompute_eps=False):
    """The DDIM step written out, with switches that reproduce the usual mistakes."""
    x0 = (x - (1 - ab).sqrt() * eps) / (ab.sqrt() if sqrt_x0 else ab)
    if clip is not None:
        x0 = x0.clamp(*clip)
        if recompute_eps:
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    sigma = eta * ((1 - abp) / (1 - ab) * (1 - ab / abp)).sqrt()
    direction = (1 - abp - (sigma ** 2 if minus_sigma else 0)).clamp(min=0).sqrt() * eps
    return abp.sqrt() * x0 + direction + (sigma * z if noise else 0)


def check_ddim_step(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, t, t_prev, eps, alphas_cumprod, eta, z) -> x_prev``, one DDIM step
    from index t to index t_prev < t (Song et al. 2021, eqs. 12 and 16):

        x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t
        σ_t = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)
        x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ_t²) ε + σ_t z

    x_t, eps, z: (B, ...); t, t_prev: (B,) long 0-based, and t_prev = −1 means "to x_0"
    (ᾱ_prev = 1); alphas_cumprod: (T,); eta: a float ≥ 0 (η = 0 is deterministic).
    Chapter: Sampling."""
    def run_case(fn, case: Case):
        eta, skip = case.options.get("eta", 0.5), case.options.get("skip", 10)
        g = generator(seed)
        _, abar = case.betas_and_alphas_cumprod()
        x_t, eps, z = (case.randn(g) for _ in range(3))
        if case.t == "to_x0":
            t = random_timesteps(case.shape[0], case.T, g, case.device, low=0, high=skip)
            t_prev = torch.full_like(t, -1)
        else:
            t = case.timesteps(g).clamp(min=skip)
            t_prev = t - skip
        out, changed = call_unmodified(fn, [x_t, t, t_prev, eps, abar, eta, z])
        if changed:
            return changed
        ref = _reference_ddim_step(x_t, t, t_prev, eps, abar, eta, z)
        ab64 = abar.detach().double().cpu()
        ab = extract(ab64.to(x_t), t, x_t.shape)
        abp = torch.where(t_prev >= 0, ab64.to(case.device, case.dtype)[t_prev.clamp(min=0)], 1.0).view_as(ab)
        abw = extract(ab64.to(x_t), t_prev % case.T, x_t.shape)  # alphas_cumprod[t_prev], −1 wrapping
        call = lambda tt, tp: _reference_ddim_step(x_t, tt, tp, eps, abar, eta, z)  # noqa: E731
        mistakes = [
            (f"η is ignored: with η > 0 the step adds σ_t z and the ε term shrinks. {DDIM}.",
             _ddim_by_hand(x_t, ab, abp, eps, 0.0, z) if eta > 0 else None),
            (f"z is ignored: add σ_t · z. {DDIM}.", _ddim_by_hand(x_t, ab, abp, eps, eta, z, noise=False)),
            (f"σ_t² is not subtracted: the ε term is √(1 − ᾱ_prev − σ_t²) · ε. {DDIM}.",
             _ddim_by_hand(x_t, ab, abp, eps, eta, z, minus_sigma=False)),
            (f"missing square root on ᾱ_t in x̂_0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t. {DDIM}.",
             _ddim_by_hand(x_t, ab, abp, eps, eta, z, sqrt_x0=False)),
            ("x̂_0 is clipped to [0, 1], but the model's data lie in [−1, 1] (to_model_range); "
             "the plain step does not clip: x̂_0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t.",
             _ddim_by_hand(x_t, ab, abp, eps, eta, z, clip=(0, 1))),
            ("x̂_0 is clipped to [−1, 1] while ε is kept: the plain step does not clip; to clip, "
             "recompute ε = (x_t − √ᾱ_t x̂_0)/√(1 − ᾱ_t) from the clipped x̂_0, as the samplers' "
             "clip_denoised=True does.", _ddim_by_hand(x_t, ab, abp, eps, eta, z, clip=(-1, 1))),
            ("x̂_0 is clipped to [−1, 1] (and ε recomputed, as the samplers' clip_denoised=True "
             "does); this check expects the plain step, without clipping.",
             _ddim_by_hand(x_t, ab, abp, eps, eta, z, clip=(-1, 1), recompute_eps=True)),
            ("t_prev = −1 means ᾱ_prev = 1 (the step to x_0), but alphas_cumprod[-1] wraps "
             "around to the last entry (that is why x_prev is NaN there: √ of 1 − ᾱ_t/ᾱ_prev < 0); "
             "use torch.where(t_prev >= 0, alphas_cumprod[t_prev.clamp(min=0)], 1.0).",
             _ddim_by_hand(x_t, ab, abw, eps, eta, z) if case.t == "to_x0" else None),
            ("t − 1 is used instead of t_prev: DDIM steps may skip; take ᾱ_prev at t_prev, "
             f"ᾱ_prev = alphas_cumprod[t_prev]. {DDIM}.", call(t, t - 1) if skip > 1 else None),
            ("off by one: your result matches the reference with t and t_prev both minus 1; "
             "they are already 0-based indices.", call(t - 1, t_prev - 1) if case.t != "to_x0" else None),
            ("off by one: your result matches the reference with t and t_prev both plus 1; "
             "they are already 0-based indices.", call(t + 1, t_prev + 1) if case.t == "mid" else None),
        ]
        return compare(out, ref, mistakes, like=x_t, what="x_prev", equation=DDIM)

    img = (4, 1, 5, 6)
    cases = [Case("η = 0, skipping 10 steps", options=dict(eta=0.0)),
             Case("η = 0.5, skipping 10 steps", options=dict(eta=0.5)),
             Case("η = 1, consecutive steps", options=dict(eta=1.0, skip=1)),
             Case("first step (t = T − 1), η = 1", t="last", options=dict(eta=1.0)),
             Case("last step to x_0 (t_prev = −1), η = 0.5", t="to_x0", options=dict(eta=0.5)),
             Case("batch of 1", (1, 3, 4, 4)),
             Case("2-D points (5, 2)", (5, 2)),
             Case("float64", img, torch.float64),
             Case("cosine schedule, T = 50", schedule="cosine", T=50)]
    cases += [Case(f"on {d}", device=d) for d in other_devices()]
    return run_check("check_ddim_step", fn, "fn(x_t, t, t_prev, eps, alphas_cumprod, eta, z)",
                     parts_from_cases(cases, run_case), strict, verbose)
