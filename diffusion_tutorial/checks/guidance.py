"""Check for classifier-free guidance: the guided noise prediction.
Chapter: Classifier-free guidance."""
from __future__ import annotations

import torch

from .cases import Case, call_unmodified, generator, other_devices, parts_from_cases
from .harness import CheckResult, compare, diffusion_for, run_check

NUM_CLASSES = 10  # the toy model's classes; label NUM_CLASSES is the null label ∅
CFG = "ε̃ = ε_θ(x_t, t, ∅) + w (ε_θ(x_t, t, y) − ε_θ(x_t, t, ∅))"


class _ToyConditional(torch.nn.Module):
    """A deterministic stand-in for a class-conditional ε_θ(x_t, t, y): y=None, or the null
    label ``NUM_CLASSES``, gives the unconditional prediction, as the package's UNet does."""

    def forward(self, x, t, y=None):
        t = t.to(x.dtype).view(-1, *[1] * (x.ndim - 1))
        eps = 0.5 * x + torch.sin(7 * t / 100)
        if y is None:
            return eps
        y = y.to(x.dtype).view(-1, *[1] * (x.ndim - 1))
        label_term = torch.cos(x + 0.7 * y) * (y != NUM_CLASSES).to(x.dtype)   # 0 for ∅
        return eps + label_term


def _reference_guided_eps(model, x_t, t, y, w):
    d = diffusion_for(torch.linspace(1e-4, 0.02, 100, dtype=torch.float64), x_t.device)
    return d.predict_eps(model, x_t, t, y, guidance_scale=w)


def check_guided_eps(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(model, x_t, t, y, w) -> eps``, the classifier-free guided noise prediction
    (Ho & Salimans 2022, eq. 6, written with our w = their w + 1):

        ε̃ = ε_θ(x_t, t, ∅) + w · (ε_θ(x_t, t, y) − ε_θ(x_t, t, ∅))

    ``model(x_t, t, y)`` is the conditional prediction and ``model(x_t, t, None)`` the
    unconditional one (the null label ∅); x_t: (B, ...); t, y: (B,) long; w: a float
    (w = 0 unconditional, w = 1 conditional). Returns a tensor shaped like x_t.
    Chapter: Classifier-free guidance."""
    def run_case(fn, case: Case):
        w = case.options.get("w", 3.0)
        g = generator(seed)
        x_t = case.randn(g)
        t = case.timesteps(g)
        y = torch.randint(0, NUM_CLASSES, (case.shape[0],), generator=g).to(case.device)
        model = _ToyConditional()
        out, changed = call_unmodified(fn, [model, x_t, t, y, w])
        if changed:
            return changed
        ref = _reference_guided_eps(model, x_t, t, y, w)
        cond, uncond = model(x_t, t, y), model(x_t, t, None)
        mistakes = [   # a mistake that coincides with the reference for this w is never reached
            (f"you used Ho & Salimans' form (1 + w) ε_y − w ε_∅, whose w is our w − 1: with "
             f"our w, {CFG}.", (1 + w) * cond - w * uncond),
            (f"the two predictions are swapped: {CFG}.", cond + w * (uncond - cond)),
            (f"the unconditional prediction is missing: {CFG}.", w * cond),
            (f"w multiplies ε_y alone; it multiplies the difference ε_y − ε_∅: {CFG}.",
             uncond + w * cond),
            (f"the result is the conditional prediction whatever w is: {CFG}.", cond),
            (f"the result is the unconditional prediction whatever w is: {CFG}.", uncond),
        ]
        return compare(out, ref, mistakes, like=x_t, what="the guided ε")

    cases = [Case("w = 3, (4, 1, 5, 6) images"),
             Case("w = 0 is the unconditional model", options=dict(w=0.0)),
             Case("w = 1 is the conditional model", options=dict(w=1.0)),
             Case("w = 7.5, 2-D points (5, 2)", (5, 2), options=dict(w=7.5)),
             Case("batch of 1", (1, 3, 4, 4)),
             Case("float64", dtype=torch.float64)]
    cases += [Case(f"on {d}", device=d) for d in other_devices()]
    return run_check("check_guided_eps", fn, "fn(model, x_t, t, y, w)",
                     parts_from_cases(cases, run_case), strict, verbose)
