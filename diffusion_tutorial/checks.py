"""Check a student's implementation against the package and say, in plain words, what is wrong.

Each ``check_*`` function calls the student's function on random inputs (float32 and
float64, a batch of 1, 2-D points, the first and the last timestep, every available
device), compares it with the package's reference and, when the numbers differ, compares
them with a list of known mistakes (a missing square root, t off by one, β instead of β̃,
a wrong sign, ...) to name the mistake. It prints a short report, one ✓/✗ line per part,
and returns a :class:`CheckResult` that is true when every part passed. With
``strict=True`` a failing check raises ``AssertionError`` with the report, which is what
autograder and pytest tests want::

    from diffusion_tutorial.checks import check_q_sample
    check_q_sample(my_q_sample)               # prints the report
    check_q_sample(my_q_sample, strict=True)  # raises AssertionError if anything is wrong

Conventions (see the notation sheet): ``t`` is a (B,) long tensor of 0-based indices,
index i being paper time t = i + 1, so ``alphas_cumprod[t]`` is ᾱ at paper time t + 1 and
``t = 0`` is the first step. Schedule tensors are 1-D of length T. The reference answers
are the ``_reference_*`` functions below; each calls the package
(:class:`~diffusion_tutorial.diffusion.GaussianDiffusion` and the schedules) rather
than repeating its equations.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple, Optional

import torch

from .diffusion import GaussianDiffusion
from .schedules import alphas_cumprod_from_betas, cosine_beta_schedule, make_betas
from .utils import get_device

__all__ = ["CheckResult", "check_q_sample", "check_cosine_schedule", "check_posterior",
           "check_mean_from_eps", "check_loss", "check_p_losses", "check_ddpm_step",
           "check_ddim_step", "check_score_from_eps", "check_scale_to_model_range"]

# |yours − reference| ≤ atol + rtol·|reference|. float32 is loose enough for honest
# rounding (1 − ᾱ_1 ≈ 1e-4 keeps only ~3 digits in float32), tight enough to tell t from t ± 1.
TOLERANCES = {torch.float32: (1e-4, 2e-3), torch.float64: (1e-6, 1e-5)}
T_CHECK = 100  # a short linear schedule: neighbouring ᾱ_t differ enough to spot t ± 1


# ============================================================ results
class Part(NamedTuple):
    """One line of a report: ``passed`` is True, False, or None (skipped)."""
    name: str
    passed: Optional[bool]
    message: str = ""


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


class _Stop(Exception):
    """A failure so basic (not implemented, wrong signature) that later parts are skipped."""


# ============================================================ reference solutions
def _betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    abar = alphas_cumprod.detach().double().cpu()
    return 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])  # β_t = 1 − ᾱ_t/ᾱ_{t−1}


def _diffusion(betas: torch.Tensor, device, variance: str = "beta") -> GaussianDiffusion:
    return GaussianDiffusion(betas=betas.detach().double().cpu(), variance=variance).to(device)


def _reference_q_sample(x0, t, noise, alphas_cumprod):
    d = _diffusion(_betas_from_alphas_cumprod(alphas_cumprod), x0.device)
    return d.q_sample(x0, t, noise)


def _reference_cosine_schedule(T, s=0.008):
    return cosine_beta_schedule(T, s)


def _reference_posterior(x0, x_t, t, betas):
    mean, variance = _diffusion(betas, x_t.device).q_posterior(x0, x_t, t)
    return mean, variance.to(x_t.dtype)  # the package stores β̃ as float32


def _reference_mean_from_eps(x_t, t, eps, betas):
    return _diffusion(betas, x_t.device).mean_from_eps(x_t, t, eps)


def _reference_loss(eps_pred, eps):
    # L_simple through the package: a "model" that returns eps_pred, and noise = eps.
    d = GaussianDiffusion(timesteps=1).to(eps.device)
    return d.p_losses(lambda x_t, t: eps_pred, torch.zeros_like(eps), t=0, noise=eps)


def _reference_p_losses(model, x0, t, noise, alphas_cumprod):
    d = _diffusion(_betas_from_alphas_cumprod(alphas_cumprod), x0.device)
    return d.p_losses(model, x0, t, noise)


def _reference_ddpm_step(x_t, t, eps, betas, z, variance="beta"):
    d = _diffusion(betas, x_t.device, variance)
    return d.p_sample(lambda x, tt: eps, x_t, t, noise=z)["sample"]


def _reference_ddim_step(x_t, t, t_prev, eps, alphas_cumprod, eta, z):
    d = _diffusion(_betas_from_alphas_cumprod(alphas_cumprod), x_t.device)
    return d.ddim_step(x_t, t, t_prev, eps, eta=eta, noise=z)


def _reference_score_from_eps(eps, t, alphas_cumprod):
    d = _diffusion(_betas_from_alphas_cumprod(alphas_cumprod), eps.device)
    return d.score_from_eps(eps, t, eps)


def _reference_scale_to_model_range(x):
    try:
        from .data import to_model_range
    except ImportError:  # the data module is optional; it defines the same map
        return x * 2 - 1
    return to_model_range(x)


# ============================================================ comparing
def _close(a, b, dtype=torch.float32) -> bool:
    atol, rtol = TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a.detach().double().cpu(), b.detach().double().cpu(),
                               atol=atol, rtol=rtol))


def _as_output(out, what: str = "the result") -> torch.Tensor:
    if out is Ellipsis or out is None:
        raise _Stop(f"your function returned {'...' if out is Ellipsis else 'None'}: replace "
                    "the ... placeholder with your code and `return` the result.")
    if not isinstance(out, torch.Tensor):
        raise _Stop(f"{what} is a {type(out).__name__}, expected a torch.Tensor.")
    return out


def _compare(out, ref, variants=(), like=None, what="the result") -> Optional[str]:
    """None when ``out`` matches ``ref``; otherwise the most specific explanation."""
    out = _as_output(out, what)
    like = ref if like is None else like
    if out.shape != ref.shape:
        return (f"wrong shape: {what} has shape {tuple(out.shape)}, expected "
                f"{tuple(ref.shape)}.")
    if out.device != like.device:
        return (f"{what} is on {out.device}, the inputs on {like.device}: create new "
                "tensors on the input's device (device=x.device).")
    if out.dtype != like.dtype:
        return (f"{what} is {out.dtype} for {like.dtype} inputs: keep the input dtype "
                "(don't create tensors with a fixed dtype; use dtype=x.dtype).")
    if not torch.isfinite(out).all():
        return f"{what} contains NaN or inf (a division by zero, or a log/sqrt of a negative?)."
    if _close(out, ref, like.dtype):
        return None
    for message, v in variants:
        if v is not None and _close(out, v, like.dtype):
            return message
    o, r = out.detach().double().cpu().flatten(), ref.detach().double().cpu().flatten()
    if r.norm() > 0:
        c = float(o @ r / (r @ r))
        if abs(c - 1) > 1e-2 and _close(o, c * r, like.dtype):
            if abs(c + 1) < 1e-3:
                return f"wrong sign: {what} is the negative of the expected value."
            return f"wrong scale: {what} is {c:.4g} times the expected value."
    err = (o - r).abs()
    return (f"wrong values: {what} differs from the reference by up to {err.max():.3g} "
            f"(mean {err.mean():.3g}); re-read the equation in the docstring.")


def _shift_variants(call, t: torch.Tensor, T: int) -> list:
    """The reference at t − 1 (negative indices wrap, as Python indexing does) and t + 1."""
    out = [("off by one in t: your result matches the reference at t − 1. t is already a "
            "0-based index (alphas_cumprod[t] is ᾱ at paper time t + 1): don't subtract 1.",
            call((t - 1) % T))]
    if (t + 1 < T).all():
        out.append(("off by one in t: your result matches the reference at t + 1. t is a "
                    "0-based index (alphas_cumprod[t] is ᾱ at paper time t + 1): don't add 1.",
                    call(t + 1)))
    return out


def _explain(e: Exception, signature: str) -> str:
    text = str(e).split("\n")[0]
    if isinstance(e, NotImplementedError):
        raise _Stop("not implemented yet: replace `raise NotImplementedError` / `...` with your code.")
    if isinstance(e, TypeError) and ("argument" in text or "positional" in text):
        raise _Stop(f"could not call it as {signature} ({text}).")
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


def _gist(message: str) -> str:
    """A message without its numbers, to spot the same problem in several parts."""
    return re.sub(r"[0-9.]+", "#", message)


def _run(name: str, fn: Callable, signature: str, parts, strict: bool, verbose: bool) -> CheckResult:
    result = CheckResult(name)
    if not callable(fn):
        result.parts.append(Part("is a function", False, f"expected a function {signature}, "
                                 f"got {type(fn).__name__}."))
        parts = []
    stopped = False
    for part_name, test in parts:
        if stopped:
            result.parts.append(Part(part_name, None, "skipped"))
            continue
        try:
            message = test(fn)
        except _Stop as e:
            message, stopped = str(e), True
        except Exception as e:  # noqa: BLE001 - any student error becomes a message
            try:
                message = _explain(e, signature)
            except _Stop as stop:
                message, stopped = str(stop), True
        if message and _gist(message) in {_gist(p.message) for p in result.parts}:
            message = "same problem as above."
        result.parts.append(Part(part_name, message is None, message or ""))
    if verbose and (result.passed or not strict):  # a strict failure shows it in the error
        print(result.report())
    if strict and not result.passed:
        raise AssertionError(result.report())
    return result


# ============================================================ test inputs
def _devices() -> list[torch.device]:
    devices = [get_device("auto"), torch.device("cpu")]
    return [d for i, d in enumerate(devices) if d not in devices[:i]]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(shape, gen, dtype, device):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def _timesteps(batch: int, T: int, gen, device, low: int = 1, high: Optional[int] = None):
    high = T - 1 if high is None else high  # away from both edges unless asked
    return torch.randint(low, high, (batch,), generator=gen).to(device)


def _cases(seed: int):
    """(part name, batch shape, dtype, device, t-rule) for the checks that take t."""
    cases = [("random t, float32, (4, 1, 5, 6) images", (4, 1, 5, 6), torch.float32, "cpu", "mid"),
             ("first step (t = 0)", (3, 1, 5, 6), torch.float32, "cpu", "first"),
             ("last step (t = T − 1)", (3, 1, 5, 6), torch.float32, "cpu", "last"),
             ("batch of 1", (1, 3, 4, 4), torch.float32, "cpu", "mid"),
             ("2-D points (5, 2)", (5, 2), torch.float32, "cpu", "mid"),
             ("float64", (4, 1, 5, 6), torch.float64, "cpu", "mid")]
    for d in _devices():
        if d.type != "cpu":
            cases.append((f"on {d}", (4, 1, 5, 6), torch.float32, d, "mid"))
    return cases


def _t_for(rule: str, batch: int, T: int, gen, device):
    if rule == "first":
        return torch.zeros(batch, dtype=torch.long, device=device)
    if rule == "last":
        return torch.full((batch,), T - 1, dtype=torch.long, device=device)
    return _timesteps(batch, T, gen, device)


def _schedule(dtype, device, T: int = T_CHECK, schedule: str = "linear"):
    betas = make_betas(schedule, T)
    return betas.to(device, dtype), alphas_cumprod_from_betas(betas).to(device, dtype)


def _call_unmodified(fn, inputs: list):
    """Call ``fn(*inputs)``; return (output, message) where the message is set when the
    function changed one of its input tensors in place (other arguments are passed as is)."""
    before = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in inputs]
    out = fn(*inputs)
    for b, a in zip(before, inputs):
        if isinstance(a, torch.Tensor) and not torch.equal(b, a.detach()):
            return out, "your function changed one of its input tensors in place; work on copies."
    return out, None


def _cases_parts(cases, run_case):
    """Turn the case list into (part name, test) pairs; each test returns a message or None."""
    return [(c[0], (lambda fn, c=c: run_case(fn, *c[1:]))) for c in cases]


def _coef(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """values[t] shaped (B, 1, ..., 1) to broadcast against x."""
    return values.to(x.device, x.dtype)[t].view(-1, *[1] * (x.ndim - 1))


def _with_cosine(cases):
    return cases + [("cosine schedule, T = 50", (4, 1, 5, 6), torch.float32, "cpu", "mid", "cosine", 50)]


def _full(cases):
    return [c + ("linear", T_CHECK) if len(c) == 5 else c for c in cases]


_WRAP = ("at t = 0, ᾱ_{t−1} must be ᾱ_0 = 1, but alphas_cumprod[t − 1] wraps around to "
         "the last entry. Use alphas_cumprod_prev = torch.cat([torch.ones(1), "
         "alphas_cumprod[:-1]]) and index it with t.")


# ============================================================ forward process
def check_q_sample(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(x0, t, noise, alphas_cumprod) -> x_t``, the closed-form forward process

        x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε          (DDPM eq. 4)

    x0 and noise: (B, ...) tensors; t: (B,) long tensor of 0-based indices;
    alphas_cumprod: (T,) tensor, so ᾱ_t is ``alphas_cumprod[t]``. Returns x_t shaped like x0.
    Chapter: The forward process."""
    def run_case(fn, shape, dtype, device, rule, schedule, T):
        g = _gen(seed)
        _, abar = _schedule(dtype, device, T, schedule)
        x0, noise = _randn(shape, g, dtype, device), _randn(shape, g, dtype, device)
        t = _t_for(rule, shape[0], T, g, device)
        inputs = [x0, t, noise, abar]
        out, changed = _call_unmodified(fn, inputs)
        if changed:
            return changed
        ref = _reference_q_sample(x0, t, noise, abar)
        a = _coef(abar, t, x0)
        variants = [
            ("missing square root on ᾱ_t: x0 is multiplied by ᾱ_t, it must be √ᾱ_t "
             "(the square root of alphas_cumprod[t]); without it Var(x_t) is not 1.",
             a * x0 + (1 - a).sqrt() * noise),
            ("missing square root on 1 − ᾱ_t: the noise is multiplied by the variance "
             "1 − ᾱ_t; multiply it by the standard deviation √(1 − ᾱ_t).",
             a.sqrt() * x0 + (1 - a) * noise),
            ("both square roots are missing: x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε.",
             a * x0 + (1 - a) * noise),
            ("x0 and the noise have swapped coefficients: x0 takes √ᾱ_t, the noise √(1 − ᾱ_t).",
             (1 - a).sqrt() * x0 + a.sqrt() * noise),
            ("wrong sign on the noise term: x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε (a plus).",
             a.sqrt() * x0 - (1 - a).sqrt() * noise),
            ("the noise term is missing: add √(1 − ᾱ_t) · noise.", a.sqrt() * x0),
            ("x0 was rescaled inside q_sample: x0 is already in [−1, 1]; rescale data once "
             "(to_model_range) before the forward process, not here.",
             _reference_q_sample(x0 * 2 - 1, t, noise, abar)),
        ] + _shift_variants(lambda tt: _reference_q_sample(x0, tt, noise, abar), t, T)
        return _compare(out, ref, variants, like=x0, what="x_t")

    parts = _cases_parts(_with_cosine(_full(_cases(seed))), run_case)
    return _run("check_q_sample", fn, "fn(x0, t, noise, alphas_cumprod)", parts, strict, verbose)


def check_cosine_schedule(fn, *, strict: bool = False, verbose: bool = True) -> CheckResult:
    """Check ``fn(T, s=0.008) -> betas``, the cosine schedule of Improved DDPM (eq. 17):

        ᾱ_t = f(t)/f(0),  f(t) = cos²(((t/T) + s)/(1 + s) · π/2),  t = 0..T
        β_t = 1 − ᾱ_t/ᾱ_{t−1} for t = 1..T, clipped to at most 0.999

    Returns a 1-D tensor of T values (float64 recommended); ``betas[0]`` is β_1.
    Chapter: The forward process."""
    import math

    def variants(T, s):
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
            ("f(t) is the square of the cosine: cos²(...), not cos(...).",
             ratio(c).clamp(max=0.999)),
            ("the offset s is ignored: use it in f(t) = cos²(((t/T) + s)/(1 + s) · π/2).",
             _reference_cosine_schedule(T, 0.008 if s != 0.008 else 0.0)),
        ]

    def run_case(fn, T, s, pass_s):
        out = fn(T, s) if pass_s else fn(T)
        if not isinstance(out, torch.Tensor) and hasattr(out, "__array__"):
            out = torch.as_tensor(out)
        out = _as_output(out, "your schedule")
        if out.ndim == 1 and out.shape[0] == T + 1:
            return (f"returned T + 1 = {T + 1} values: ᾱ_t has T + 1 entries (t = 0..T) "
                    "but β_t only T (t = 1..T): β_t = 1 − ᾱ_t/ᾱ_{t−1}.")
        if out.ndim == 1 and out.shape[0] == T - 1:
            return (f"returned T − 1 = {T - 1} values: evaluate f at the T + 1 points "
                    "t = 0, 1, ..., T (torch.arange(T + 1)), which give T values of β_t.")
        out = out.detach().cpu().double()
        ref = _reference_cosine_schedule(T, s)
        message = _compare(out, ref, variants(T, s), what="betas")
        if message is None and not ((out > 0).all() and (out <= 0.999).all()):
            return "every β_t must lie in (0, 0.999]."
        return message

    parts = [("T = 1000 (default s)", lambda fn: run_case(fn, 1000, 0.008, False)),
             ("T = 10", lambda fn: run_case(fn, 10, 0.008, True)),
             ("s = 0.02 (s is used)", lambda fn: run_case(fn, 50, 0.02, True))]
    return _run("check_cosine_schedule", fn, "fn(T, s=0.008)", parts, strict, verbose)


def check_scale_to_model_range(fn, *, strict: bool = False, verbose: bool = True,
                               seed: int = 0) -> CheckResult:
    """Check ``fn(x) -> x`` in [−1, 1] for images x in [0, 1]: the map 2x − 1 that the
    model's data goes through once (``data.to_model_range``). Same shape, dtype, device.
    Chapter: The forward process."""
    def run_case(fn, shape, dtype, device):
        x = torch.rand(shape, generator=_gen(seed), dtype=torch.float64).to(device, dtype)
        x.view(-1)[:3] = torch.tensor([0.0, 0.5, 1.0], dtype=dtype)  # include both ends
        out, changed = _call_unmodified(fn, [x])
        if changed:
            return changed
        variants = [
            ("the data is still in [0, 1]: map it to [−1, 1] with 2x − 1; the model and the "
             "forward process assume data in [−1, 1].", x.clone()),
            ("the result lies in [−0.5, 0.5]: subtracting 0.5 is not enough (this is what "
             "Normalize((0.5,), (1.0,)) does); use 2x − 1, i.e. Normalize((0.5,), (0.5,)).",
             x - 0.5),
            ("the result lies in [0, 2]: subtract 1 after doubling (2x − 1).", 2 * x),
            ("flipped: 0 must map to −1 and 1 to +1 (2x − 1, not 1 − 2x).", 1 - 2 * x),
            ("the input was divided by 255, but it is already in [0, 1].", x / 255 * 2 - 1),
        ]
        return (_compare(out, _reference_scale_to_model_range(x), variants, like=x, what="the result"))

    cases = [("images (4, 1, 5, 6), float32", (4, 1, 5, 6), torch.float32, "cpu"),
             ("batch of 1, 3 channels", (1, 3, 4, 4), torch.float32, "cpu"),
             ("float64", (4, 1, 5, 6), torch.float64, "cpu")]
    cases += [(f"on {d}", (4, 1, 5, 6), torch.float32, d) for d in _devices() if d.type != "cpu"]
    parts = _cases_parts(cases, run_case)
    return _run("check_scale_to_model_range", fn, "fn(x)", parts, strict, verbose)


# ============================================================ reverse process
def _mean_variants(x_t, t, eps, betas, T):
    """Known mistakes in μ_θ = (1/√α_t)(x_t − β_t/√(1 − ᾱ_t) ε), as (message, value) pairs."""
    b64 = betas.detach().double().cpu()
    b = _coef(b64, t, x_t)
    a = _coef(1 - b64, t, x_t)
    ab = _coef(alphas_cumprod_from_betas(b64), t, x_t)
    return [
        ("missing square root on α_t: divide by √α_t, not α_t.",
         (x_t - b / (1 - ab).sqrt() * eps) / a),
        ("missing square root on 1 − ᾱ_t: the coefficient of ε is β_t/√(1 − ᾱ_t).",
         (x_t - b / (1 - ab) * eps) / a.sqrt()),
        ("the coefficient of ε is β_t/√(1 − ᾱ_t), not √(1 − ᾱ_t).",
         (x_t - (1 - ab).sqrt() * eps) / a.sqrt()),
        ("ᾱ_t (alphas_cumprod) used in the prefactor: it is 1/√α_t with α_t = 1 − β_t.",
         (x_t - b / (1 - ab).sqrt() * eps) / ab.sqrt()),
        ("you returned the predicted clean image x̂_0; μ_θ is the mean of x_{t−1}: "
         "(1/√α_t)(x_t − β_t/√(1 − ᾱ_t) ε).", (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()),
        ("wrong sign: subtract the noise term, x_t − β_t/√(1 − ᾱ_t) · ε.",
         (x_t + b / (1 - ab).sqrt() * eps) / a.sqrt()),
        ("multiply by 1/√α_t, not by √α_t.", (x_t - b / (1 - ab).sqrt() * eps) * a.sqrt()),
    ] + _shift_variants(lambda tt: _reference_mean_from_eps(x_t, tt, eps, betas), t, T)


def check_posterior(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(x0, x_t, t, betas) -> (mean, variance)``, the true posterior
    q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (DDPM eqs. 6–7):

        μ̃_t = √ᾱ_{t−1} β_t/(1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t) · x_t
        β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t),   with ᾱ_{t−1} = 1 at t = 0 (so β̃ = 0 there)

    x0, x_t: (B, ...); t: (B,) long 0-based; betas: (T,). The mean is shaped like x_t; the
    variance like x_t or (B, 1, ..., 1). Chapter: The reverse process."""
    def run_case(fn, shape, dtype, device, rule, schedule, T):
        g = _gen(seed)
        betas, abar = _schedule(dtype, device, T, schedule)
        x0, x_t = _randn(shape, g, dtype, device), _randn(shape, g, dtype, device)
        t = _t_for(rule, shape[0], T, g, device)
        inputs = [x0, x_t, t, betas]
        out, changed = _call_unmodified(fn, inputs)
        if changed:
            return changed
        if out is Ellipsis or not isinstance(out, (tuple, list)) or len(out) != 2:
            _as_output(out)
            raise _Stop("return a pair (mean, variance), e.g. `return mean, variance`.")
        mean, var = out
        ref_mean, ref_var = _reference_posterior(x0, x_t, t, betas)
        b64 = betas.detach().double().cpu()
        ab64 = alphas_cumprod_from_betas(b64)
        b, a, ab = _coef(b64, t, x_t), _coef(1 - b64, t, x_t), _coef(ab64, t, x_t)
        abp = _coef(torch.cat([ab64.new_ones(1), ab64[:-1]]), t, x_t)
        abw = _coef(ab64, (t - 1) % T, x_t)  # ᾱ_{t−1} from a wrapped index
        mean_of = lambda p: (p.sqrt() * b / (1 - ab) * x0 + a.sqrt() * (1 - p) / (1 - ab) * x_t)  # noqa: E731
        shift = lambda k: _reference_posterior(x0, x_t, k, betas)  # noqa: E731
        mean_variants = [
            ("the coefficients are swapped: x0 takes √ᾱ_{t−1} β_t/(1 − ᾱ_t) and x_t takes "
             "√α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t).",
             a.sqrt() * (1 - abp) / (1 - ab) * x0 + abp.sqrt() * b / (1 - ab) * x_t),
            ("missing square root on ᾱ_{t−1} in the coefficient of x0.",
             abp * b / (1 - ab) * x0 + a.sqrt() * (1 - abp) / (1 - ab) * x_t),
            ("missing square root on α_t in the coefficient of x_t.",
             abp.sqrt() * b / (1 - ab) * x0 + a * (1 - abp) / (1 - ab) * x_t),
            ("ᾱ_t used where the equation has ᾱ_{t−1}.", mean_of(ab)),
            (_WRAP, mean_of(abw) if rule == "first" else None),
        ] + [(m.replace("your result", "your mean"), v[0])
             for m, v in _shift_variants(shift, t, T)]
        message = _compare(mean, ref_mean, mean_variants, like=x_t, what="the mean")
        if message:
            return message
        var = _as_output(var, "the variance")
        try:
            var = var.expand_as(x_t)
        except RuntimeError:
            return (f"the variance has shape {tuple(var.shape)}: give it the shape of x_t or "
                    "(B, 1, ..., 1) so it broadcasts against x_t.")
        var_variants = [
            ("the variance is β_t; the posterior variance is β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t) "
             "(DDPM eq. 7).", b.expand_as(x_t)),
            ("you returned the standard deviation √β̃_t; return the variance β̃_t.", ref_var.sqrt()),
            (_WRAP, (b * (1 - abw) / (1 - ab)).expand_as(x_t) if rule == "first" else None),
        ] + [(m.replace("your result", "your variance"), v[1])
             for m, v in _shift_variants(shift, t, T)]
        return (_compare(var, ref_var, var_variants, like=x_t, what="the variance"))

    parts = _cases_parts(_with_cosine(_full(_cases(seed))), run_case)
    return _run("check_posterior", fn, "fn(x0, x_t, t, betas)", parts, strict, verbose)


def check_mean_from_eps(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, t, eps, betas) -> mean``, the model's mean of x_{t−1}:

        μ_θ(x_t, t) = (1/√α_t) · (x_t − β_t/√(1 − ᾱ_t) · ε_θ)     (DDPM eq. 11)

    x_t, eps: (B, ...); t: (B,) long 0-based; betas: (T,), α_t = 1 − β_t and
    ᾱ_t = ∏_{s≤t} α_s. Returns a tensor shaped like x_t. Chapter: The reverse process."""
    def run_case(fn, shape, dtype, device, rule, schedule, T):
        g = _gen(seed)
        betas, _ = _schedule(dtype, device, T, schedule)
        x_t, eps = _randn(shape, g, dtype, device), _randn(shape, g, dtype, device)
        t = _t_for(rule, shape[0], T, g, device)
        inputs = [x_t, t, eps, betas]
        out, changed = _call_unmodified(fn, inputs)
        if changed:
            return changed
        ref = _reference_mean_from_eps(x_t, t, eps, betas)
        return (_compare(out, ref, _mean_variants(x_t, t, eps, betas, T), like=x_t, what="μ_θ"))

    parts = _cases_parts(_with_cosine(_full(_cases(seed))), run_case)
    return _run("check_mean_from_eps", fn, "fn(x_t, t, eps, betas)", parts, strict, verbose)


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

    def run_case(fn, shape, dtype, device, rule, schedule, T):
        g = _gen(seed)
        betas, _ = _schedule(dtype, device, T, schedule)
        x_t, eps, z = (_randn(shape, g, dtype, device) for _ in range(3))
        if rule == "mixed":
            t = _timesteps(shape[0], T, g, device)
            t[::2] = 0
        else:
            t = _t_for(rule, shape[0], T, g, device)
        inputs = [x_t, t, eps, betas, z]
        out, changed = _call_unmodified(fn, inputs)
        if changed:
            return changed
        ref = _reference_ddpm_step(x_t, t, eps, betas, z, variance)
        d = _diffusion(betas, device, variance)
        mean = d.mean_from_eps(x_t, t, eps)
        var = _coef(d.model_variance, t, x_t)
        mask = (t > 0).to(dtype).view(-1, *[1] * (x_t.ndim - 1))
        variants = [
            ("noise added at the first step: at t = 0 (paper t = 1) return μ_θ with no "
             "noise (z = 0), DDPM Algorithm 2.", mean + var.sqrt() * z),
            ("z is ignored: add σ_t · z (except at t = 0).", mean),
            ("z is multiplied by the variance σ_t²; multiply it by the standard deviation σ_t.",
             mean + mask * var * z),
            (f"your step uses {names[other]}, this check expects {names[variance]} (call "
             f"check_ddpm_step(fn, variance={other!r}) if your course uses {names[other]}).",
             _reference_ddpm_step(x_t, t, eps, betas, z, other)),
        ] + [(m, v + mask * var.sqrt() * z) for m, v in _mean_variants(x_t, t, eps, betas, T)]
        return _compare(out, ref, variants, like=x_t, what="x_{t−1}")

    cases = _full(_cases(seed))
    cases.insert(1, ("per-example t (t = 0 for some)", (4, 1, 5, 6), torch.float32, "cpu",
                     "mixed", "linear", T_CHECK))
    parts = _cases_parts(_with_cosine(cases), run_case)
    return _run("check_ddpm_step", fn, "fn(x_t, t, eps, betas, z)", parts, strict, verbose)


def check_ddim_step(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, t, t_prev, eps, alphas_cumprod, eta, z) -> x_prev``, one DDIM step
    from index t to index t_prev < t (Song et al. 2021, eqs. 12 and 16):

        x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t
        σ_t = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)
        x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ_t²) ε + σ_t z

    x_t, eps, z: (B, ...); t, t_prev: (B,) long 0-based, and t_prev = −1 means "to x_0"
    (ᾱ_prev = 1); alphas_cumprod: (T,); eta: a float ≥ 0 (η = 0 is deterministic).
    Chapter: Sampling."""
    def manual(x, ab, abp, eps, eta, z, sqrt_x0=True, minus_sigma=True, noise=True):
        x0 = (x - (1 - ab).sqrt() * eps) / (ab.sqrt() if sqrt_x0 else ab)
        sigma = eta * ((1 - abp) / (1 - ab) * (1 - ab / abp)).sqrt()
        direction = (1 - abp - (sigma ** 2 if minus_sigma else 0)).clamp(min=0).sqrt() * eps
        return abp.sqrt() * x0 + direction + (sigma * z if noise else 0)

    def run_case(fn, shape, dtype, device, rule, schedule, T, eta=0.5, skip=10):
        g = _gen(seed)
        _, abar = _schedule(dtype, device, T, schedule)
        x_t, eps, z = (_randn(shape, g, dtype, device) for _ in range(3))
        if rule == "to_x0":
            t = _timesteps(shape[0], T, g, device, low=0, high=skip)
            t_prev = torch.full_like(t, -1)
        else:
            t = _t_for(rule, shape[0], T, g, device).clamp(min=skip)
            t_prev = t - skip
        out, changed = _call_unmodified(fn, [x_t, t, t_prev, eps, abar, eta, z])
        if changed:
            return changed
        ref = _reference_ddim_step(x_t, t, t_prev, eps, abar, eta, z)
        ab64 = abar.detach().double().cpu()
        ab = _coef(ab64, t, x_t)
        abp = torch.where(t_prev >= 0, ab64.to(device, dtype)[t_prev.clamp(min=0)], 1.0).view_as(ab)
        abw = _coef(ab64, t_prev, x_t)  # alphas_cumprod[t_prev] with −1 wrapping
        call = lambda tt, tp: _reference_ddim_step(x_t, tt, tp, eps, abar, eta, z)  # noqa: E731
        variants = [
            ("η is ignored: with η > 0 the step adds σ_t z with σ_t = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) "
             "√(1 − ᾱ_t/ᾱ_prev), and the ε term becomes √(1 − ᾱ_prev − σ_t²) ε.",
             manual(x_t, ab, abp, eps, 0.0, z) if eta > 0 else None),
            ("z is ignored: add σ_t · z.", manual(x_t, ab, abp, eps, eta, z, noise=False)),
            ("σ_t² is not subtracted: the ε term is √(1 − ᾱ_prev − σ_t²) · ε.",
             manual(x_t, ab, abp, eps, eta, z, minus_sigma=False)),
            ("missing square root on ᾱ_t in x̂_0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t.",
             manual(x_t, ab, abp, eps, eta, z, sqrt_x0=False)),
            ("t_prev = −1 means ᾱ_prev = 1 (the step to x_0), but alphas_cumprod[-1] wraps "
             "around to the last entry; use 1.0 where t_prev < 0.",
             manual(x_t, ab, abw, eps, eta, z) if rule == "to_x0" else None),
            ("t − 1 is used instead of t_prev: DDIM steps may skip; take ᾱ_prev at t_prev.",
             call(t, t - 1) if skip > 1 else None),
            ("off by one: your result matches the reference with t and t_prev both minus 1; "
             "they are already 0-based indices.", call(t - 1, t_prev - 1) if rule != "to_x0" else None),
            ("off by one: your result matches the reference with t and t_prev both plus 1; "
             "they are already 0-based indices.", call(t + 1, t_prev + 1) if rule == "mid" else None),
        ]
        return _compare(out, ref, variants, like=x_t, what="x_prev")

    L, f32, f64 = "linear", torch.float32, torch.float64
    img = (4, 1, 5, 6)
    cases = [("η = 0, skipping 10 steps", img, f32, "cpu", "mid", L, T_CHECK, 0.0),
             ("η = 0.5, skipping 10 steps", img, f32, "cpu", "mid", L, T_CHECK, 0.5),
             ("η = 1, consecutive steps", img, f32, "cpu", "mid", L, T_CHECK, 1.0, 1),
             ("first step (t = T − 1), η = 1", img, f32, "cpu", "last", L, T_CHECK, 1.0),
             ("last step to x_0 (t_prev = −1), η = 0.5", img, f32, "cpu", "to_x0", L, T_CHECK, 0.5),
             ("batch of 1", (1, 3, 4, 4), f32, "cpu", "mid", L, T_CHECK),
             ("2-D points (5, 2)", (5, 2), f32, "cpu", "mid", L, T_CHECK),
             ("float64", img, f64, "cpu", "mid", L, T_CHECK),
             ("cosine schedule, T = 50", img, f32, "cpu", "mid", "cosine", 50)]
    cases += [(f"on {d}", img, f32, d, "mid", L, T_CHECK) for d in _devices() if d.type != "cpu"]
    parts = _cases_parts(cases, run_case)
    return _run("check_ddim_step", fn, "fn(x_t, t, t_prev, eps, alphas_cumprod, eta, z)",
                parts, strict, verbose)


# ============================================================ loss and score
def check_score_from_eps(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(eps, t, alphas_cumprod) -> score``, the score the noise prediction implies:

        s_θ(x_t, t) = −ε_θ(x_t, t) / √(1 − ᾱ_t)        (Song et al. 2021; ∇ log q(x_t | x_0))

    eps: (B, ...); t: (B,) long 0-based; alphas_cumprod: (T,). Returns a tensor shaped like
    eps. Chapter: The score view."""
    def run_case(fn, shape, dtype, device, rule, schedule, T):
        g = _gen(seed)
        _, abar = _schedule(dtype, device, T, schedule)
        eps = _randn(shape, g, dtype, device)
        t = _t_for(rule, shape[0], T, g, device)
        inputs = [eps, t, abar]
        out, changed = _call_unmodified(fn, inputs)
        if changed:
            return changed
        ref = _reference_score_from_eps(eps, t, abar)
        ab = _coef(abar, t, eps)
        variants = [
            ("wrong sign: the score is −ε/√(1 − ᾱ_t); it points against the noise, back "
             "towards the data.", -ref),
            ("missing square root: divide by √(1 − ᾱ_t), the noise's standard deviation.",
             -eps / (1 - ab)),
            ("divide by √(1 − ᾱ_t), not by √ᾱ_t.", -eps / ab.sqrt()),
            ("divide by √(1 − ᾱ_t) instead of multiplying.", -eps * (1 - ab).sqrt()),
        ] + _shift_variants(lambda tt: _reference_score_from_eps(eps, tt, abar), t, T)
        return _compare(out, ref, variants, like=eps, what="the score")

    parts = _cases_parts(_with_cosine(_full(_cases(seed))), run_case)
    return _run("check_score_from_eps", fn, "fn(eps, t, alphas_cumprod)", parts, strict, verbose)


def _scalar(out, what="the loss") -> Optional[str]:
    out = _as_output(out, what)
    if out.ndim != 0:
        return (f"{what} has shape {tuple(out.shape)}; reduce it to one number (a 0-d "
                "tensor) with .mean() over every element.")
    return None


def check_loss(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(eps_pred, eps) -> loss``, the simple loss of DDPM (eq. 14):

        L_simple = mean over every element of (ε − ε_θ)²

    eps_pred, eps: (B, ...) tensors. Returns a 0-d tensor (no ``.item()``) through which
    gradients reach eps_pred. Chapter: The loss."""
    def run_case(fn, shape, dtype, device, grad=False):
        g = _gen(seed)
        eps_pred, eps = _randn(shape, g, dtype, device), _randn(shape, g, dtype, device)
        eps_pred.requires_grad_(grad)
        out, changed = _call_unmodified(fn, [eps_pred, eps])
        if changed:
            return changed
        if isinstance(out, (float, int)) and not isinstance(out, bool):
            raise _Stop("returned a Python number: return the tensor (no .item()) so the loss "
                        "can be backpropagated.")
        message = _scalar(out)
        if message:
            return message
        ref = _reference_loss(eps_pred, eps)
        diff = (eps_pred - eps).detach()
        variants = [
            ("you summed the squared errors; L_simple takes their mean.", (diff ** 2).sum()),
            ("you summed over the pixels and averaged over the batch; take the mean over "
             "every element (as F.mse_loss does).", (diff ** 2).flatten(1).sum(1).mean()),
            ("this is the mean absolute error; square the differences.", diff.abs().mean()),
            ("you took the square root (RMSE); L_simple is the mean squared error.",
             (diff ** 2).mean().sqrt()),
        ]
        message = _compare(out, ref, variants, like=eps, what="the loss")
        if message or not grad:
            return message
        if not out.requires_grad:
            return ("no gradient reaches eps_pred: don't call .item(), .detach(), .numpy() "
                    "or torch.tensor(...) inside the loss.")
        out.backward()
        if eps_pred.grad is None or not _close(eps_pred.grad, 2 * diff / diff.numel(), dtype):
            return "the gradient with respect to eps_pred is wrong (expected 2(ε_θ − ε)/N)."
        return None

    f32 = torch.float32
    cases = [("images (4, 1, 5, 6)", (4, 1, 5, 6), f32, "cpu"),
             ("gradient reaches eps_pred", (4, 1, 5, 6), f32, "cpu", True),
             ("batch of 1", (1, 3, 4, 4), f32, "cpu"),
             ("2-D points (5, 2)", (5, 2), f32, "cpu"),
             ("float64", (4, 1, 5, 6), torch.float64, "cpu")]
    cases += [(f"on {d}", (4, 1, 5, 6), f32, d) for d in _devices() if d.type != "cpu"]
    parts = _cases_parts(cases, run_case)
    parts.append(("zero when eps_pred equals eps", lambda fn: None if float(
        fn(torch.ones(2, 3), torch.ones(2, 3))) == 0 else "the loss must be 0 when eps_pred == eps."))
    return _run("check_loss", fn, "fn(eps_pred, eps)", parts, strict, verbose)


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
    def run_case(fn, shape, dtype, device, rule, schedule, T):
        g = _gen(seed)
        _, abar = _schedule(dtype, device, T, schedule)
        x0, noise = _randn(shape, g, dtype, device), _randn(shape, g, dtype, device)
        t = _t_for(rule, shape[0], T, g, device)
        model = _ToyModel(T).to(device)
        out, changed = _call_unmodified(fn, [model, x0, t, noise, abar])
        if changed:
            return changed
        message = _scalar(out)
        if message:
            return message
        ref = _reference_p_losses(model, x0, t, noise, abar)
        a = _coef(abar, t, x0)
        x_t = _reference_q_sample(x0, t, noise, abar)
        mse = lambda p, q: ((p - q) ** 2).mean()  # noqa: E731
        variants = [
            ("the model must see the noisy x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε, not x0.",
             mse(model(x0, t), noise)),
            ("the target is the noise ε, not x0.", mse(model(x_t, t), x0)),
            ("missing square root on ᾱ_t when making x_t.",
             mse(model(a * x0 + (1 - a).sqrt() * noise, t), noise)),
            ("the model must get the same 0-based t that made x_t (not t + 1).",
             mse(model(x_t, t + 1), noise)),
            ("the model must get the same 0-based t that made x_t (not t − 1).",
             mse(model(x_t, t - 1), noise)),
            ("you summed the squared errors; take their mean.", ((model(x_t, t) - noise) ** 2).sum()),
        ] + _shift_variants(lambda tt: _reference_p_losses(model, x0, tt, noise, abar), t, T)
        message = _compare(out, ref, variants, like=x0, what="the loss")
        if message:
            return message
        if not out.requires_grad:
            return "no gradient reaches the model: don't detach or call .item() in the loss."
        return None

    parts = _cases_parts(_with_cosine(_full(_cases(seed))), run_case)
    return _run("check_p_losses", fn, "fn(model, x0, t, noise, alphas_cumprod)", parts,
                strict, verbose)
