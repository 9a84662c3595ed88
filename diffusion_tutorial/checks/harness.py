"""The harness every check is built on: results, reference answers, comparison, and
naming the mistake.

A check calls the student's function on a list of :class:`~.cases.Case` inputs, compares each
output with the package's reference and, when they differ, with a list of known mistakes, and
reports one ✓/✗ :class:`Part` per case in a :class:`CheckResult`.

How to add a check (``check_v_from_eps`` as the example):

1. **The reference answer.** Add ``_reference_v_from_eps(...)`` below. It calls the package
   (:class:`~diffusion_tutorial.diffusion.GaussianDiffusion`, the schedules) rather than
   repeating the equation, so that the check and the package cannot drift apart.
2. **The cases** (:mod:`.cases`). ``timestep_cases()`` is the standard list for a function of
   (x, t, schedule): random t, the first and the last step, a batch of one, 2-D points,
   float64 and every device; ``with_cosine_case(...)`` adds a cosine schedule. Build others
   with ``Case(name, shape, ...)``; settings only your check reads go in ``Case.options``.
3. **One case.** Write ``run_case(fn, case)``: draw inputs with ``g = generator(seed)``,
   ``case.randn(g)``, ``case.timesteps(g)`` and ``case.betas_and_alphas_cumprod()``; call the
   student's function through ``call_unmodified``; return
   ``compare(out, reference, mistakes, like=x, what="v", equation=V)``, where ``mistakes``
   lists ``(message, value)`` pairs, the value a wrong answer would give, and ``V`` is the
   equation in words, which the messages that name no particular mistake quote. Each mistake's
   message names the mistake and quotes the equation to use; mistakes are tried before the
   NaN check (a known mistake may give NaN), and when several fit, the report keeps the one
   named in an earlier part. ``shift_mistakes`` adds t ± 1. ``run_case`` returns None
   (passed), a message (failed) or ``Stop(message)`` (failed so badly that the remaining
   cases are skipped).
4. **The check.** ``return run_check("check_v_from_eps", fn, "fn(eps, x_t, t, alphas_cumprod)",
   parts_from_cases(cases, run_case), strict, verbose)`` in the module of its chapter
   (forward, reverse, loss, sampling, or a new one), and export it from ``checks/__init__.py``.
5. **Its tests** in ``tests/test_checks.py``: the reference and an independent solution pass;
   every named mistake, written as a student would, fails with its message.

Conventions (see the notation sheet): ``t`` is a (B,) long tensor of 0-based indices, index i
being paper time t = i + 1, so ``alphas_cumprod[t]`` is ᾱ at paper time t + 1 and ``t = 0`` is
the first step. Schedule tensors are 1-D of length T.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple, Optional, Union

import torch

from ..data import to_model_range
from ..diffusion import GaussianDiffusion
from ..schedules import cosine_beta_schedule

# |yours − reference| ≤ atol + rtol·|reference|. float32 is loose enough for honest
# rounding (1 − ᾱ_1 ≈ 1e-4 keeps only ~3 digits in float32), tight enough to tell t from t ± 1.
TOLERANCES = {torch.float32: (1e-4, 2e-3), torch.float64: (1e-6, 1e-5)}


# ============================================================ results
class Part(NamedTuple):
    """One line of a report: ``passed`` is True, False, or None (skipped)."""
    name: str
    passed: Optional[bool]
    message: str = ""


class Stop(NamedTuple):
    """A failure so basic (not implemented, wrong signature) that later parts are skipped."""
    message: str


Outcome = Union[None, str, Stop]  # what one case returns: passed, failed, failed and stop


class CheckResult:
    """The outcome of one check: true when every part passed.

    ``parts`` lists :class:`Part` tuples; ``messages`` the failures in words;
    ``report()`` the text printed by the check."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parts: list[Part] = []

    @property
    def passed(self) -> bool:
        return bool(self.parts) and all(p.passed for p in self.parts)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def messages(self) -> list[str]:
        return [f"{p.name}: {p.message}" for p in self.parts if p.passed is False]

    def report(self) -> str:
        n_ok = sum(bool(p.passed) for p in self.parts)
        head = "all parts passed" if self.passed else f"{n_ok}/{len(self.parts)} parts passed"
        lines = [f"{self.name}: {head}"]
        for p in self.parts:
            mark = {True: "✓", False: "✗", None: "–"}[p.passed]
            lines.append(f"  {mark} {p.name}" + (f": {p.message}" if p.message else ""))
        return "\n".join(lines)

    __str__ = report

    def __repr__(self) -> str:
        n_ok = sum(bool(p.passed) for p in self.parts)
        return f"<CheckResult {self.name}: {n_ok}/{len(self.parts)} parts passed>"


# ============================================================ reference answers
def _betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    abar = alphas_cumprod.detach().double().cpu()
    return 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])  # β_t = 1 − ᾱ_t/ᾱ_{t−1}


def diffusion_for(betas: torch.Tensor, device, variance: str = "beta") -> GaussianDiffusion:
    """The package's process for a given schedule, on ``device``."""
    return GaussianDiffusion(betas=betas.detach().double().cpu(), variance=variance).to(device)


def _reference_q_sample(x0, t, noise, alphas_cumprod):
    d = diffusion_for(_betas_from_alphas_cumprod(alphas_cumprod), x0.device)
    return d.q_sample(x0, t, noise)


def _reference_cosine_schedule(T, s=0.008):
    return cosine_beta_schedule(T, s)


def _reference_scale_to_model_range(x):
    return to_model_range(x)


def _reference_posterior(x0, x_t, t, betas):
    mean, variance = diffusion_for(betas, x_t.device).q_posterior(x0, x_t, t)
    return mean, variance.to(x_t.dtype)  # the package stores β̃ as float32


def _reference_mean_from_eps(x_t, t, eps, betas):
    return diffusion_for(betas, x_t.device).mean_from_eps(x_t, t, eps)


def _reference_ddpm_step(x_t, t, eps, betas, z, variance="beta"):
    d = diffusion_for(betas, x_t.device, variance)
    return d.p_sample(lambda x, tt: eps, x_t, t, noise=z)["sample"]


def _reference_ddim_step(x_t, t, t_prev, eps, alphas_cumprod, eta, z):
    d = diffusion_for(_betas_from_alphas_cumprod(alphas_cumprod), x_t.device)
    # int timesteps take the package's float64 coefficients (its buffers are float32, whose
    # rounding 1/√ᾱ_t amplifies beyond the float64 tolerance); so one example at a time
    rows = [d.ddim_step(x_t[i:i + 1], int(t[i]), int(t_prev[i]), eps[i:i + 1], eta=eta, noise=z[i:i + 1])
            for i in range(x_t.shape[0])]
    return torch.cat(rows)


def _reference_loss(eps_pred, eps):
    # L_simple through the package: a "model" that returns eps_pred, and noise = eps.
    d = GaussianDiffusion(timesteps=1).to(eps.device)
    return d.p_losses(lambda x_t, t: eps_pred, torch.zeros_like(eps), t=0, noise=eps)


def _reference_p_losses(model, x0, t, noise, alphas_cumprod):
    d = diffusion_for(_betas_from_alphas_cumprod(alphas_cumprod), x0.device)
    return d.p_losses(model, x0, t, noise)


def _reference_score_from_eps(eps, t, alphas_cumprod):
    d = diffusion_for(_betas_from_alphas_cumprod(alphas_cumprod), eps.device)
    return d.score_from_eps(eps, t, eps)


# ============================================================ comparing
def close(a, b, dtype=torch.float32, equal_nan: bool = False) -> bool:
    """``a`` is a tensor of ``b``'s shape within the tolerance for ``dtype`` (NaN matching NaN
    when ``equal_nan``: a known mistake may well give NaN, e.g. √ of a negative)."""
    atol, rtol = TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a.detach().double().cpu(), b.detach().double().cpu(),
                               atol=atol, rtol=rtol, equal_nan=equal_nan))


def not_a_tensor(out, what: str = "the result") -> Optional[Stop]:
    """A :class:`Stop` when ``out`` is a placeholder or not a tensor; None otherwise."""
    if out is Ellipsis or out is None:
        return Stop(f"your function returned {'...' if out is Ellipsis else 'None'}: replace "
                    "the ... placeholder with your code and `return` the result.")
    if not isinstance(out, torch.Tensor):
        return Stop(f"{what} is a {type(out).__name__}, expected a torch.Tensor.")
    return None


class Candidates(str):
    """The message of the first known mistake that fits, remembering the others that fit as
    well (at t = 0, for example, 1 − ᾱ_t equals β_t, so two mistakes give the same numbers):
    :func:`run_check` keeps the one it named in an earlier part."""
    alternatives: tuple = ()

    def __new__(cls, messages: list[str]) -> "Candidates":
        candidates = super().__new__(cls, messages[0])
        candidates.alternatives = tuple(messages)
        return candidates


def compare(out, ref, mistakes=(), like=None, what="the result", equation: str = "") -> Outcome:
    """None when ``out`` matches ``ref``; otherwise the most specific explanation.

    ``mistakes`` are (message, value) pairs, tried before anything else (a value of None is
    skipped); ``equation`` is quoted by the messages that name no particular mistake."""
    problem = not_a_tensor(out, what)
    if problem:
        return problem
    like = ref if like is None else like
    use = f" The equation: {equation}." if equation else ""
    if out.shape != ref.shape:
        return (f"wrong shape: {what} has shape {tuple(out.shape)}, expected "
                f"{tuple(ref.shape)}.")
    if out.device != like.device:
        return (f"{what} is on {out.device}, the inputs on {like.device}: create new "
                "tensors on the input's device (device=x.device).")
    if out.dtype != like.dtype:
        return (f"{what} is {out.dtype} for {like.dtype} inputs: keep the input dtype "
                "(don't create tensors with a fixed dtype; use dtype=x.dtype).")
    if close(out, ref, like.dtype):
        return None
    named = [m for m, value in mistakes if value is not None and close(out, value, like.dtype, True)]
    if named:
        return Candidates(named)
    if not torch.isfinite(out).all():
        return (f"{what} contains NaN or inf (a division by zero, or a log/sqrt of a "
                f"negative?).{use}")
    o, r = out.detach().double().cpu().flatten(), ref.detach().double().cpu().flatten()
    if r.numel() == 1:
        return f"wrong value: {what} is {float(o):.4g}, expected {float(r):.4g}.{use}"
    if r.norm() > 0:
        c = float(o @ r / (r @ r))
        if abs(c - 1) > 1e-2 and close(o, c * r, like.dtype):
            if abs(c + 1) < 1e-3:
                return f"wrong sign: {what} is the negative of the expected value.{use}"
            return f"wrong scale: {what} is {c:.4g} times the expected value.{use}"
    err = (o - r).abs()
    return (f"wrong values: {what} differs from the reference by up to {err.max():.3g} "
            f"(mean {err.mean():.3g}).{use}")


def shift_mistakes(call: Callable, t: torch.Tensor, T: int) -> list:
    """The reference at t − 1 (negative indices wrap, as Python indexing does) and t + 1."""
    out = [("off by one in t: your result matches the reference at t − 1. t is already a "
            "0-based index (alphas_cumprod[t] is ᾱ at paper time t + 1): don't subtract 1.",
            call((t - 1) % T))]
    if (t + 1 < T).all():
        out.append(("off by one in t: your result matches the reference at t + 1. t is a "
                    "0-based index (alphas_cumprod[t] is ᾱ at paper time t + 1): don't add 1.",
                    call(t + 1)))
    return out


ALPHAS_CUMPROD_PREV_WRAPS = (
    "at t = 0, ᾱ_{t−1} must be ᾱ_0 = 1, but alphas_cumprod[t − 1] wraps around to the last "
    "entry. Use alphas_cumprod_prev = torch.cat([torch.ones(1), alphas_cumprod[:-1]]) and "
    "index it with t.")


def explain_error(e: Exception, signature: str) -> Outcome:
    """What an exception raised by the student's function means, in words."""
    text = str(e).split("\n")[0]
    if isinstance(e, NotImplementedError):
        return Stop("not implemented yet: replace `raise NotImplementedError` / `...` with your code.")
    if isinstance(e, TypeError) and ("argument" in text or "positional" in text):
        return Stop(f"could not call it as {signature} ({text}).")
    if "size of tensor" in text or "must match the size" in text or "broadcast" in text:
        return (f"shape error ({text}). A per-example coefficient such as "
                "alphas_cumprod[t] has shape (B,); reshape it to (B, 1, ..., 1), one 1 per "
                "extra dimension of x, e.g. diffusion_tutorial.extract(a, t, x.shape) or "
                "a.view(-1, *[1] * (x.ndim - 1)).")
    if "Boolean value of Tensor" in text:
        return ("t holds one index per example (shape (B,)); `if t == 0` fails for a "
                "batch. Use a mask instead, e.g. (t > 0).view(-1, 1, ...) * noise.")
    if isinstance(e, IndexError) or "out of bounds" in text or "index" in text and "range" in text:
        return (f"index out of range ({text}). t is a 0-based index in 0..T−1 and "
                "alphas_cumprod[t] is ᾱ at paper time t + 1: don't add 1 to t.")
    if "same device" in text:
        return (f"device mismatch ({text}): create new tensors on the input's device, "
                "e.g. torch.ones(..., device=x.device).")
    return f"raised {type(e).__name__}: {text}"


def _without_numbers(message: str) -> str:
    """A message without its numbers, to spot the same problem in several parts."""
    return re.sub(r"[0-9.]+", "#", message)


def _attempt(test: Callable, fn: Callable, signature: str) -> Outcome:
    try:
        return test(fn)
    except Exception as e:  # noqa: BLE001 - any student error becomes a message
        return explain_error(e, signature)


def _same_problem(message: str, failures: list[tuple[str, str]]) -> Optional[str]:
    """"same problem as above/as in ..." when an earlier part failed with this message."""
    for i, (name, earlier) in enumerate(reversed(failures)):
        if _without_numbers(earlier) == _without_numbers(message):
            return "same problem as above." if i == 0 else f"same problem as in “{name}”."
    return None


def run_check(name: str, fn: Callable, signature: str, parts, strict: bool,
              verbose: bool) -> CheckResult:
    """Run every (part name, test) pair on ``fn``, report, and raise if ``strict``."""
    result = CheckResult(name)
    if not callable(fn):
        result.parts.append(Part("is a function", False, f"expected a function {signature}, "
                                 f"got {type(fn).__name__}."))
        parts = []
    stopped = False
    failures: list[tuple[str, str]] = []  # (part, message as first found)
    for part_name, test in parts:
        if stopped:
            result.parts.append(Part(part_name, None, "skipped"))
            continue
        outcome = _attempt(test, fn, signature)
        stopped = isinstance(outcome, Stop)
        message = outcome.message if stopped else outcome
        if isinstance(message, Candidates):  # keep naming the mistake named before
            message = next((m for m in message.alternatives if any(m == f for _, f in failures)),
                           str(message))
        shown = message
        if message:
            shown = _same_problem(message, failures) or message
            failures.append((part_name, message))
        result.parts.append(Part(part_name, message is None, shown or ""))
    if verbose and (result.passed or not strict):  # a strict failure shows it in the error
        print(result.report())
    if strict and not result.passed:
        raise AssertionError(result.report())
    return result
