"""The autograded questions of the assignments, as the out-of-process grader runs them.

Each :class:`Question` names the function a student writes, makes its inputs from a seed
(the student's own: :func:`~diffusion_tutorial.checks.classroom.student_seed`) on a β schedule
of its own, which no preset of the package gives, and knows the reference answer. The
inputs are made the same way in the grader's process and in the fresh process that runs the
student's code (:mod:`.sandbox`), so only outputs travel between them. Chapter: For
instructors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..diffusion import GaussianDiffusion
from ..samplers import ddim_sample
from ..schedules import alphas_cumprod_from_betas, linear_beta_schedule
from .classroom import student_seed
from .harness import (TOLERANCES, _reference_cosine_schedule, _reference_ddim_step,
                      _reference_ddpm_step, _reference_loss, _reference_mean_from_eps,
                      _reference_p_losses, _reference_posterior, _reference_q_sample,
                      _reference_scale_to_model_range, _reference_score_from_eps)

F32, F64 = torch.float32, torch.float64


@dataclass
class Call:
    """One call of the student's function: ``function(*args)``, described by ``label``."""
    function: str
    args: tuple
    label: str
    tolerance: tuple = TOLERANCES[F32]  # (atol, rtol)


@dataclass
class Question:
    """An autograded question: the function it grades, its calls, and their reference.

    ``reads`` names variables of the notebook that ``check_reads(values, student_id)`` checks
    (a message when wrong, None when right)."""
    name: str
    function: str
    calls: Callable[[torch.Generator], list[Call]]
    reference: Callable[..., Any]
    reads: tuple = ()
    check_reads: Optional[Callable[[dict, str], Optional[str]]] = None
    graded: tuple = field(default=())  # the functions whose bodies must not delegate

    def __post_init__(self) -> None:
        self.graded = self.graded or (self.function,)


# ============================================================ inputs of their own
def _schedule_of_its_own(g: torch.Generator) -> torch.Tensor:
    """A linear β schedule no preset of the package gives: T in [40, 160), random ends."""
    T = int(torch.randint(40, 160, (1,), generator=g))
    u = torch.rand(2, generator=g, dtype=F64)
    start, end = 1e-4 * (0.5 + float(u[0])), 0.02 * 1000 / T * (0.6 + 0.4 * float(u[1]))
    return torch.linspace(start, min(end, 0.5), T, dtype=F64)


def _timesteps(g, batch: int, T: int, first_for_some: bool = False) -> torch.Tensor:
    """(batch,) 0-based indices with the first and the last step among them."""
    t = torch.randint(0, T, (batch,), generator=g)
    t[0], t[-1] = 0, T - 1
    if first_for_some:
        t[::2] = 0
    return t


_SHAPES = [((4, 1, 5, 6), F32, "images (4, 1, 5, 6), float32"),
           ((6, 2), F64, "2-D points (6, 2), float64"),
           ((1, 3, 4, 4), F32, "a batch of 1, float32")]


def _randn(g, shape, dtype):
    return torch.randn(shape, generator=g, dtype=F64).to(dtype)


def _process_calls(function: str, make_args) -> Callable[[torch.Generator], list[Call]]:
    """Calls on every shape of ``_SHAPES``; ``make_args(g, shape, dtype, betas, t)``."""
    def calls(g):
        out = []
        for shape, dtype, label in _SHAPES:
            betas = _schedule_of_its_own(g)
            t = _timesteps(g, shape[0], len(betas), first_for_some=function == "ddpm_step")
            out.append(Call(function, make_args(g, shape, dtype, betas, t), label, TOLERANCES[dtype]))
        return out
    return calls


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed stand-in for ε_θ(x_t, t) that depends on both."""
    return torch.tanh(x) * (1 + t.to(x.dtype).view(-1, *[1] * (x.ndim - 1)) / 50)


def _abar(betas, dtype):
    return alphas_cumprod_from_betas(betas).to(dtype)


# ============================================================ assignment 1: the forward process
def _scale_calls(g):
    return [Call("scale_to_model_range", (torch.rand(shape, generator=g, dtype=F64).to(dtype),),
                 label, TOLERANCES[dtype]) for shape, dtype, label in _SHAPES]


def _cosine_calls(g):
    T, s = int(torch.randint(20, 400, (1,), generator=g)), 0.002 + 0.05 * float(torch.rand(1, generator=g))
    return [Call("cosine_schedule", (T_, s_), f"T = {T_}, s = {s_:.4g}", (1e-6, 1e-3))
            for T_, s_ in [(1, 0.008), (7, 0.008), (T, 0.008), (T, s)]]


FORWARD_PROCESS = [
    Question("scale_to_model_range", "scale_to_model_range", _scale_calls,
             _reference_scale_to_model_range),
    Question("q_sample", "q_sample", _process_calls("q_sample", lambda g, shape, dtype, betas, t: (
        _randn(g, shape, dtype), t, _randn(g, shape, dtype), _abar(betas, dtype))), _reference_q_sample),
    Question("cosine_schedule", "cosine_schedule", _cosine_calls, _reference_cosine_schedule),
]

# ============================================================ assignment 2: the reverse process
REVERSE_PROCESS = [
    Question("posterior", "posterior", _process_calls("posterior", lambda g, shape, dtype, betas, t: (
        _randn(g, shape, dtype), _randn(g, shape, dtype), t, betas.to(dtype))), _reference_posterior),
    Question("mean_from_eps", "mean_from_eps", _process_calls(
        "mean_from_eps", lambda g, shape, dtype, betas, t: (
            _randn(g, shape, dtype), t, _randn(g, shape, dtype), betas.to(dtype))), _reference_mean_from_eps),
    Question("ddpm_step", "ddpm_step", _process_calls("ddpm_step", lambda g, shape, dtype, betas, t: (
        _randn(g, shape, dtype), t, _randn(g, shape, dtype), betas.to(dtype), _randn(g, shape, dtype))),
        _reference_ddpm_step),
]


# ============================================================ assignment 3: the loss and sampling
def _loss_calls(g):
    return [Call("loss", (_randn(g, shape, dtype), _randn(g, shape, dtype)), label, TOLERANCES[dtype])
            for shape, dtype, label in _SHAPES]


def _ddim_calls(g):
    calls = []
    for (shape, dtype, label), (eta, rule) in zip(_SHAPES, [(0.0, "skip"), (0.5, "to_x0"), (1.0, "next")]):
        betas = _schedule_of_its_own(g)
        T = len(betas)
        skip = int(torch.randint(2, 8, (1,), generator=g)) if rule == "skip" else 1
        t = torch.randint(0, T, (shape[0],), generator=g)
        if rule == "to_x0":
            t_prev = torch.full_like(t, -1)
        else:
            t = t.clamp(min=skip)
            t_prev = t - skip
        args = (_randn(g, shape, dtype), t, t_prev, _randn(g, shape, dtype), _abar(betas, dtype), eta,
                _randn(g, shape, dtype))
        calls.append(Call("ddim_step", args, f"{label}, η = {eta:g}, t_prev = {rule}", TOLERANCES[dtype]))
    return calls


SIGMA_DATA = 0.5  # the experiment's data N(0, σ_data²), as in the notebook
EXPERIMENT_T = 1000
_EXPERIMENT_ABAR = alphas_cumprod_from_betas(linear_beta_schedule(EXPERIMENT_T))


def eps_exact(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[ε | x_t] for data N(0, σ_data²) on the T = 1000 linear schedule (the notebook's)."""
    abar = _EXPERIMENT_ABAR.to(x_t.device)[t].view(-1, 1)
    return (1 - abar).sqrt() * x_t / (abar * SIGMA_DATA ** 2 + 1 - abar)


def experiment_x_T(student_id: str) -> torch.Tensor:
    """The notebook's x_T: 2000 draws seeded by the STUDENT_ID the notebook holds."""
    seed = student_seed(student_id, "loss_and_sampling")
    return torch.randn(2000, 1, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _reference_ddim_loop(x_T, steps):
    diffusion = GaussianDiffusion(schedule="linear", timesteps=EXPERIMENT_T)
    return ddim_sample(diffusion, eps_exact, x_T.shape, steps=steps, x_T=x_T, progress=False)


def _check_sample_std(values: dict, student_id: str) -> Optional[str]:
    sample_std = values.get("sample_std")
    if not isinstance(sample_std, dict) or sorted(sample_std) != [5, 10, 50]:
        return "sample_std must be a dict with the keys 5, 10 and 50."
    x_T = experiment_x_T(student_id)
    for steps in (5, 10, 50):
        expected = float(_reference_ddim_loop(x_T, steps).std())
        got = sample_std[steps]
        if not isinstance(got, float) or abs(got - expected) > 1e-3:
            return (f"sample_std[{steps}] = {got!r} is not the spread of your samples from the "
                    f"x_T your STUDENT_ID gives ({expected:.4f}): compute it with your loop.")
    return None


LOSS_AND_SAMPLING = [
    Question("loss", "loss", _loss_calls, _reference_loss),
    Question("p_losses", "p_losses", _process_calls("p_losses", lambda g, shape, dtype, betas, t: (
        toy_model, _randn(g, shape, dtype), t, _randn(g, shape, dtype), _abar(betas, dtype))),
        _reference_p_losses),
    Question("ddim_step", "ddim_step", _ddim_calls, _reference_ddim_step),
    Question("score_from_eps", "score_from_eps", _process_calls(
        "score_from_eps", lambda g, shape, dtype, betas, t: (
            _randn(g, shape, dtype), t, _abar(betas, dtype))),
        _reference_score_from_eps),
    Question("ddim_experiment", "ddim_sample_loop", lambda g: [
        Call("ddim_sample_loop", (_randn(g, (32, 1), F64), steps), f"{steps} steps from an x_T of your own",
             (1e-4, 1e-3)) for steps in (5, 10)],
        _reference_ddim_loop, reads=("sample_std",), check_reads=_check_sample_std),
]

ASSIGNMENTS = {"forward_process": FORWARD_PROCESS, "reverse_process": REVERSE_PROCESS,
               "loss_and_sampling": LOSS_AND_SAMPLING}


def question_seed(student_id: str, assignment: str, question: str, secret: str = "") -> int:
    """The seed of a question's hidden inputs for one student (``secret``: the course's)."""
    return student_seed(student_id, f"{secret}/{assignment}/{question}")
