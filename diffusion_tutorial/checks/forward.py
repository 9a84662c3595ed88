"""Checks for the forward process: scaling the data, q(x_t | x_0) in closed form, the cosine
schedule. Chapter: The forward process."""
from __future__ import annotations

import math

import torch

from ..diffusion import extract
from .cases import (Case, call_unmodified, generator, other_devices, parts_from_cases, timestep_cases,
                    with_cosine_case)
from .harness import (CheckResult, compare, not_a_tensor, run_check, shift_mistakes,
                      _reference_cosine_schedule, _reference_q_sample, _reference_scale_to_model_range)


Q_SAMPLE = "x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε (DDPM eq. 4)"


def check_q_sample(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(x0, t, noise, alphas_cumprod) -> x_t``, the closed-form forward process

        x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε          (DDPM eq. 4)

    x0 and noise: (B, ...) tensors; t: (B,) long tensor of 0-based indices;
    alphas_cumprod: (T,) tensor, so ᾱ_t is ``alphas_cumprod[t]``. Returns x_t shaped like x0.
    Chapter: The forward process."""
    def run_case(fn, case: Case):
        _, abar, x0, noise, t = case.draw(seed)
        out, changed = call_unmodified(fn, [x0, t, noise, abar])
        if changed:
            return changed
        ref = _reference_q_sample(x0, t, noise, abar)
        a = extract(abar, t, x0.shape)
        b = 1 - a / extract(torch.cat([abar.new_ones(1), abar[:-1]]), t, x0.shape)  # β_t
        mistakes = [
            (f"missing square root on ᾱ_t: x0 is multiplied by ᾱ_t, it must be √ᾱ_t "
             f"(the square root of alphas_cumprod[t]); without it Var(x_t) is not 1. {Q_SAMPLE}.",
             a * x0 + (1 - a).sqrt() * noise),
            (f"missing square root on 1 − ᾱ_t: the noise is multiplied by the variance "
             f"1 − ᾱ_t; multiply it by the standard deviation √(1 − ᾱ_t). {Q_SAMPLE}.",
             a.sqrt() * x0 + (1 - a) * noise),
            (f"both square roots are missing: {Q_SAMPLE}.", a * x0 + (1 - a) * noise),
            (f"β_t is used where the equation has 1 − ᾱ_t: β_t is the variance one step adds, "
             f"1 − ᾱ_t the variance of all t steps together (they agree only at the first "
             f"step). {Q_SAMPLE}.", a.sqrt() * x0 + b.sqrt() * noise),
            (f"the noise is multiplied by β_t; it must be √(1 − ᾱ_t), the standard deviation "
             f"of all t steps together, not the variance of one step. {Q_SAMPLE}.",
             a.sqrt() * x0 + b * noise),
            (f"x0 and the noise have swapped coefficients: {Q_SAMPLE}.",
             (1 - a).sqrt() * x0 + a.sqrt() * noise),
            (f"wrong sign on the noise term: {Q_SAMPLE} (a plus).",
             a.sqrt() * x0 - (1 - a).sqrt() * noise),
            (f"the noise term is missing: {Q_SAMPLE}.", a.sqrt() * x0),
            ("x0 was rescaled inside q_sample: x0 is already in [−1, 1]; rescale data once "
             "(to_model_range) before the forward process, not here.",
             _reference_q_sample(x0 * 2 - 1, t, noise, abar)),
        ] + shift_mistakes(lambda tt: _reference_q_sample(x0, tt, noise, abar), t, case.T)
        return compare(out, ref, mistakes, like=x0, what="x_t", equation=Q_SAMPLE)

    parts = parts_from_cases(with_cosine_case(timestep_cases()), run_case)
    return run_check("check_q_sample", fn, "fn(x0, t, noise, alphas_cumprod)", parts, strict, verbose)


COSINE = ("ᾱ_t = f(t)/f(0) with f(t) = cos²(((t/T) + s)/(1 + s) · π/2) for t = 0..T, and "
          "β_t = 1 − ᾱ_t/ᾱ_{t−1} for t = 1..T, clipped to at most 0.999 (Improved DDPM eq. 17)")


def _cosine_mistakes(T: int, s: float) -> list:
    """Known mistakes in the cosine schedule, as (message, betas) pairs."""
    tt = torch.arange(T + 1, dtype=torch.float64)
    angle = ((tt / T) + s) / (1 + s) * math.pi / 2
    abar = torch.cos(angle) ** 2 / torch.cos(angle[0]) ** 2
    ratio = lambda a: 1 - a[1:] / a[:-1]  # noqa: E731
    c = torch.cos(angle) / torch.cos(angle[0])
    return [
        ("β_T is not clipped: clip every β_t to at most 0.999 (Improved DDPM, section 3.2), "
         "e.g. betas.clamp(max=0.999).", ratio(abar)),
        ("you returned ᾱ_t; the schedule asks for β_t = 1 − ᾱ_t/ᾱ_{t−1}.", abar[1:]),
        ("you returned ᾱ_t; the schedule asks for β_t = 1 − ᾱ_t/ᾱ_{t−1}.", abar[:-1]),
        ("β_t = 1 − ᾱ_t/ᾱ_{t−1} (a ratio of neighbours), not 1 − ᾱ_t.",
         (1 - abar[1:]).clamp(max=0.999)),
        ("f(t) is the square of the cosine, f(t) = cos²(((t/T) + s)/(1 + s) · π/2), not cos(...).",
         ratio(c).clamp(max=0.999)),
        ("the offset s is ignored: use it in f(t) = cos²(((t/T) + s)/(1 + s) · π/2).",
         _reference_cosine_schedule(T, 0.008 if s != 0.008 else 0.0)),
    ]


def check_cosine_schedule(fn, *, strict: bool = False, verbose: bool = True) -> CheckResult:
    """Check ``fn(T, s=0.008) -> betas``, the cosine schedule of Improved DDPM (eq. 17):

        ᾱ_t = f(t)/f(0),  f(t) = cos²(((t/T) + s)/(1 + s) · π/2),  t = 0..T
        β_t = 1 − ᾱ_t/ᾱ_{t−1} for t = 1..T, clipped to at most 0.999

    Returns a 1-D tensor of T values (float64 recommended); ``betas[0]`` is β_1.
    Chapter: The forward process."""
    def run_case(fn, T, s, pass_s):
        out = fn(T, s) if pass_s else fn(T)
        if not isinstance(out, torch.Tensor) and hasattr(out, "__array__"):
            out = torch.as_tensor(out)
        problem = not_a_tensor(out, "your schedule")
        if problem:
            return problem
        if out.ndim == 1 and out.shape[0] == T + 1:
            return (f"returned T + 1 = {T + 1} values: ᾱ_t has T + 1 entries (t = 0..T) "
                    "but β_t only T (t = 1..T): β_t = 1 − ᾱ_t/ᾱ_{t−1}.")
        if out.ndim == 1 and out.shape[0] == T - 1:
            return (f"returned T − 1 = {T - 1} values: evaluate f at the T + 1 points "
                    "t = 0, 1, ..., T (torch.arange(T + 1)), which give T values of β_t.")
        out = out.detach().cpu().double()
        ref = _reference_cosine_schedule(T, s)
        message = compare(out, ref, _cosine_mistakes(T, s), what="betas", equation=COSINE)
        if message is None and not ((out > 0).all() and (out <= 0.999).all()):
            return "every β_t must lie in (0, 0.999]."
        return message

    parts = [("T = 1000 (default s)", lambda fn: run_case(fn, 1000, 0.008, False)),
             ("T = 10", lambda fn: run_case(fn, 10, 0.008, True)),
             ("s = 0.02 (s is used)", lambda fn: run_case(fn, 50, 0.02, True))]
    return run_check("check_cosine_schedule", fn, "fn(T, s=0.008)", parts, strict, verbose)


def check_scale_to_model_range(fn, *, strict: bool = False, verbose: bool = True,
                               seed: int = 0) -> CheckResult:
    """Check ``fn(x) -> x`` in [−1, 1] for images x in [0, 1]: the map 2x − 1 that the
    model's data goes through once (``data.to_model_range``). Same shape, dtype, device.
    Chapter: The forward process."""
    def run_case(fn, case: Case):
        x = torch.rand(case.shape, generator=generator(seed), dtype=torch.float64).to(case.device, case.dtype)
        x.view(-1)[:3] = torch.tensor([0.0, 0.5, 1.0], dtype=case.dtype)  # include both ends
        out, changed = call_unmodified(fn, [x])
        if changed:
            return changed
        mistakes = [
            ("the data is still in [0, 1]: map it to [−1, 1] with 2x − 1; the model and the "
             "forward process assume data in [−1, 1].", x.clone()),
            ("the result lies in [−0.5, 0.5]: subtracting 0.5 is not enough (this is what "
             "Normalize((0.5,), (1.0,)) does); use 2x − 1, i.e. Normalize((0.5,), (0.5,)).",
             x - 0.5),
            ("the result lies in [0, 2]: subtract 1 after doubling (2x − 1).", 2 * x),
            ("flipped: 0 must map to −1 and 1 to +1 (2x − 1, not 1 − 2x).", 1 - 2 * x),
            ("the input was divided by 255, but it is already in [0, 1].", x / 255 * 2 - 1),
        ]
        return compare(out, _reference_scale_to_model_range(x), mistakes, like=x, what="the result",
                       equation="x ↦ 2x − 1")

    cases = [Case("images (4, 1, 5, 6), float32"),
             Case("batch of 1, 3 channels", (1, 3, 4, 4)),
             Case("float64", dtype=torch.float64)]
    cases += [Case(f"on {d}", device=d) for d in other_devices()]
    return run_check("check_scale_to_model_range", fn, "fn(x)", parts_from_cases(cases, run_case),
                     strict, verbose)
