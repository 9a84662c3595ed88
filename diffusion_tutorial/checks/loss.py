"""Checks for the loss and the score: L_simple, the full training loss, and the score a
noise prediction implies. Chapters: The loss; The score view."""
from __future__ import annotations

import torch

from ..diffusion import extract
from .cases import (Case, call_unmodified, generator, other_devices, parts_from_cases, timestep_cases,
                    with_cosine_case)
from .harness import (CheckResult, Stop, close, compare, not_a_tensor, run_check, shift_mistakes,
                      _reference_loss, _reference_p_losses, _reference_q_sample, _reference_score_from_eps)


SCORE = "s_θ(x_t, t) = −ε_θ(x_t, t)/√(1 − ᾱ_t) (Song et al. 2021)"
L_SIMPLE = "L_simple = mean((ε − ε_θ)²) over every element (DDPM eq. 14)"
P_LOSSES = ("L = mean((ε − model(x_t, t))²) with x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε, the same t for "
            "both (DDPM eq. 14)")


def check_score_from_eps(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(eps, t, alphas_cumprod) -> score``, the score the noise prediction implies:

        s_θ(x_t, t) = −ε_θ(x_t, t) / √(1 − ᾱ_t)        (Song et al. 2021; ∇ log q(x_t | x_0))

    eps: (B, ...); t: (B,) long 0-based; alphas_cumprod: (T,). Returns a tensor shaped like
    eps. Chapter: The score view."""
    def run_case(fn, case: Case):
        g = generator(seed)
        _, abar = case.betas_and_alphas_cumprod()
        eps = case.randn(g)
        t = case.timesteps(g)
        out, changed = call_unmodified(fn, [eps, t, abar])
        if changed:
            return changed
        ref = _reference_score_from_eps(eps, t, abar)
        ab = extract(abar, t, eps.shape)
        mistakes = [
            (f"wrong sign: the score points against the noise, back towards the data. {SCORE}.", -ref),
            (f"missing square root: divide by √(1 − ᾱ_t), the noise's standard deviation. {SCORE}.",
             -eps / (1 - ab)),
            (f"divide by √(1 − ᾱ_t), not by √ᾱ_t. {SCORE}.", -eps / ab.sqrt()),
            (f"divide by √(1 − ᾱ_t) instead of multiplying. {SCORE}.", -eps * (1 - ab).sqrt()),
            (f"β_t is used where the equation has 1 − ᾱ_t (they agree only at the first step). {SCORE}.",
             -eps / (1 - ab / extract(torch.cat([abar.new_ones(1), abar[:-1]]), t, eps.shape)).sqrt()),
        ] + shift_mistakes(lambda tt: _reference_score_from_eps(eps, tt, abar), t, case.T)
        return compare(out, ref, mistakes, like=eps, what="the score", equation=SCORE)

    parts = parts_from_cases(with_cosine_case(timestep_cases()), run_case)
    return run_check("check_score_from_eps", fn, "fn(eps, t, alphas_cumprod)", parts, strict, verbose)


def _not_a_scalar(out, what="the loss"):
    """A message (or :class:`Stop`) unless ``out`` is a 0-d tensor; None otherwise."""
    problem = not_a_tensor(out, what)
    if problem:
        return problem
    if out.ndim != 0:
        return (f"{what} has shape {tuple(out.shape)}; reduce it to one number (a 0-d "
                "tensor) with .mean() over every element.")
    return None


def check_loss(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(eps_pred, eps) -> loss``, the simple loss of DDPM (eq. 14):

        L_simple = mean over every element of (ε − ε_θ)²

    eps_pred, eps: (B, ...) tensors. Returns a 0-d tensor (no ``.item()``) through which
    gradients reach eps_pred. Chapter: The loss."""
    def run_case(fn, case: Case):
        g = generator(seed)
        eps_pred, eps = case.randn(g), case.randn(g)
        grad = case.options.get("grad", False)
        eps_pred.requires_grad_(grad)
        out, changed = call_unmodified(fn, [eps_pred, eps])
        if changed:
            return changed
        if isinstance(out, (float, int)) and not isinstance(out, bool):
            return Stop("returned a Python number: return the tensor (no .item()) so the loss "
                        "can be backpropagated.")
        message = _not_a_scalar(out)
        if message:
            return message
        ref = _reference_loss(eps_pred, eps)
        diff = (eps_pred - eps).detach()
        mistakes = [
            (f"you summed the squared errors; take their mean. {L_SIMPLE}.", (diff ** 2).sum()),
            ("you summed over the pixels and averaged over the batch; take the mean over "
             f"every element (as F.mse_loss does). {L_SIMPLE}.", (diff ** 2).flatten(1).sum(1).mean()),
            (f"this is the mean absolute error; square the differences. {L_SIMPLE}.", diff.abs().mean()),
            (f"you took the square root (RMSE); take the mean squared error itself. {L_SIMPLE}.",
             (diff ** 2).mean().sqrt()),
            ("this is the Huber (smooth L1) loss, as F.huber_loss or F.smooth_l1_loss compute it; "
             f"DDPM's loss is the plain squared error, e.g. F.mse_loss(eps_pred, eps). {L_SIMPLE}.",
             torch.nn.functional.huber_loss(eps_pred.detach(), eps)),
            (f"you halved the squared errors (the 1/2 of some derivations); {L_SIMPLE}.",
             (diff ** 2).mean() / 2),
        ]
        message = compare(out, ref, mistakes, like=eps, what="the loss", equation=L_SIMPLE)
        if message or not grad:
            return message
        if not out.requires_grad:
            return ("no gradient reaches eps_pred: don't call .item(), .detach(), .numpy() "
                    "or torch.tensor(...) inside the loss.")
        out.backward()
        if eps_pred.grad is None or not close(eps_pred.grad, 2 * diff / diff.numel(), case.dtype):
            return f"the gradient with respect to eps_pred is wrong (expected 2(ε_θ − ε)/N). {L_SIMPLE}."
        return None

    cases = [Case("images (4, 1, 5, 6)"),
             Case("gradient reaches eps_pred", options=dict(grad=True)),
             Case("batch of 1", (1, 3, 4, 4)),
             Case("2-D points (5, 2)", (5, 2)),
             Case("float64", dtype=torch.float64)]
    cases += [Case(f"on {d}", device=d) for d in other_devices()]
    parts = parts_from_cases(cases, run_case)
    parts.append(("zero when eps_pred equals eps", lambda fn: None if float(
        fn(torch.ones(2, 3), torch.ones(2, 3))) == 0 else "the loss must be 0 when eps_pred == eps."))
    return run_check("check_loss", fn, "fn(eps_pred, eps)", parts, strict, verbose)


class _ToyModel(torch.nn.Module):
    """A deterministic stand-in for ε_θ that depends on x_t and t and has a parameter."""

    def __init__(self, T: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))
        self.T = T

    def forward(self, x, t):
        t = t.to(x.dtype).view(-1, *[1] * (x.ndim - 1))
        return self.w.to(x.dtype) * x + torch.sin(7 * t / self.T)


def check_p_losses(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(model, x0, t, noise, alphas_cumprod) -> loss``, the full training loss:

        x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,   L = mean((ε − model(x_t, t))²)     (DDPM eq. 14)

    model: a callable ``model(x_t, t)`` returning a tensor shaped like x_t; x0, noise:
    (B, ...); t: (B,) long 0-based; alphas_cumprod: (T,). Returns a 0-d tensor.
    Chapter: The loss."""
    def run_case(fn, case: Case):
        _, abar, x0, noise, t = case.draw(seed)
        model = _ToyModel(case.T).to(case.device)
        out, changed = call_unmodified(fn, [model, x0, t, noise, abar])
        if changed:
            return changed
        message = _not_a_scalar(out)
        if message:
            return message
        ref = _reference_p_losses(model, x0, t, noise, abar)
        a = extract(abar, t, x0.shape)
        x_t = _reference_q_sample(x0, t, noise, abar)
        mse = lambda p, q: ((p - q) ** 2).mean()  # noqa: E731
        mistakes = [
            (f"the model must see the noisy x_t, not x0. {P_LOSSES}.", mse(model(x0, t), noise)),
            (f"the target is the noise ε, not x0. {P_LOSSES}.", mse(model(x_t, t), x0)),
            (f"missing square root on ᾱ_t when making x_t. {P_LOSSES}.",
             mse(model(a * x0 + (1 - a).sqrt() * noise, t), noise)),
            (f"missing square root on 1 − ᾱ_t when making x_t. {P_LOSSES}.",
             mse(model(a.sqrt() * x0 + (1 - a) * noise, t), noise)),
            (f"the model must get the same 0-based t that made x_t (not t + 1). {P_LOSSES}.",
             mse(model(x_t, t + 1), noise)),
            (f"the model must get the same 0-based t that made x_t (not t − 1). {P_LOSSES}.",
             mse(model(x_t, t - 1), noise)),
            (f"you summed the squared errors; take their mean. {P_LOSSES}.",
             ((model(x_t, t) - noise) ** 2).sum()),
        ] + shift_mistakes(lambda tt: _reference_p_losses(model, x0, tt, noise, abar), t, case.T)
        message = compare(out, ref, mistakes, like=x0, what="the loss", equation=P_LOSSES)
        if message:
            return message
        if not out.requires_grad:
            return "no gradient reaches the model: don't detach or call .item() in the loss."
        return None

    parts = parts_from_cases(with_cosine_case(timestep_cases()), run_case)
    return run_check("check_p_losses", fn, "fn(model, x0, t, noise, alphas_cumprod)", parts,
                     strict, verbose)
