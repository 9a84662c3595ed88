"""Checks for the training loop: the exponential moving average of the weights.
Chapter: Training."""
from __future__ import annotations

import torch

from ..ema import EMA
from .cases import generator, other_devices
from .harness import CheckResult, Outcome, compare, not_a_tensor, run_check


def _reference_ema_update(ema_values, param_values, decay: float) -> list:
    """One update of the package's :class:`~diffusion_tutorial.ema.EMA` (no warm-up)."""
    holder = torch.nn.ParameterList([torch.nn.Parameter(v.detach().clone()) for v in ema_values])
    ema = EMA(holder, decay=decay, warmup=False)
    current = torch.nn.ParameterList([torch.nn.Parameter(v.detach().clone()) for v in param_values])
    ema.update(current)
    return [p.detach() for p in ema.model.parameters()]


def check_ema_update(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(ema_params, params, decay)``, one update of the exponential moving average
    of the weights (DDPM appendix B; :class:`~diffusion_tutorial.ema.EMA`), in place:

        θ̄ ← γ θ̄ + (1 − γ) θ        for every pair of tensors (θ̄, θ)

    ema_params, params: lists of tensors of matching shapes; decay γ in [0, 1). The tensors in
    ``ema_params`` change in place; ``params`` must not change; nothing is returned.
    Chapter: Training."""
    def run_case(fn, decay: float, dtype=torch.float32, device="cpu", grad=False) -> Outcome:
        g = generator(seed)
        shapes = [(3, 4), (5,), (2, 1, 3, 3)]
        draw = lambda: [torch.randn(s, generator=g, dtype=torch.float64).to(device, dtype)  # noqa: E731
                        for s in shapes]
        ema, params = draw(), [p.requires_grad_(grad) for p in draw()]
        before_ema, before_params = [e.clone() for e in ema], [p.detach().clone() for p in params]
        out = fn(ema, params, decay)
        if any(not torch.equal(b, p.detach()) for b, p in zip(before_params, params)):
            return "your function changed the weights (params); only the averaged tensors change."
        if any(e.requires_grad for e in ema):
            return ("the average took part in autograd (it now requires grad): update it under "
                    "torch.no_grad(), as the package's EMA does.")
        if isinstance(out, (list, tuple)) and all(torch.equal(b, e) for b, e in zip(before_ema, ema)):
            return ("you returned new tensors but left ema_params as they were: update them in "
                    "place, e.g. ema_p.lerp_(p, 1 - decay), so the model that holds them sees it.")
        ref = _reference_ema_update(before_ema, before_params, decay)
        for e, r, b, p in zip(ema, ref, before_ema, before_params):
            problem = not_a_tensor(e, "an averaged tensor")
            if problem:
                return problem
            mistakes = [
                ("the averaged tensors did not change: update them in place, ema = decay · ema "
                 "+ (1 − decay) · param.", b),
                ("the weights are swapped: the old average keeps the share decay, "
                 "ema = decay · ema + (1 − decay) · param.", decay * p + (1 - decay) * b),
                ("the average was replaced by the weights (decay ignored): ema = decay · ema "
                 "+ (1 − decay) · param.", p),
                ("the new weights need the factor (1 − decay): ema = decay · ema + (1 − decay) · param.",
                 decay * b + p),
            ]
            message = compare(e.detach(), r.to(e), [(m, v.to(e)) for m, v in mistakes], like=b,
                              what="the averaged tensor")
            if message:
                return message
        return None

    parts = [("three tensors, decay 0.9", lambda fn: run_case(fn, 0.9)),
             ("decay 0.999", lambda fn: run_case(fn, 0.999)),
             ("decay 0: the average becomes the weights", lambda fn: run_case(fn, 0.0)),
             ("weights that require gradients", lambda fn: run_case(fn, 0.9, grad=True)),
             ("float64", lambda fn: run_case(fn, 0.9, torch.float64))]
    parts += [(f"on {d}", lambda fn, d=d: run_case(fn, 0.9, torch.float32, d)) for d in other_devices()]
    return run_check("check_ema_update", fn, "fn(ema_params, params, decay)", parts, strict, verbose)
