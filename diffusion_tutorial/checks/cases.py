"""The inputs a check tries: named :class:`Case` s and the seeded tensors they make.

A case is one line of a check's report ("first step (t = 0)", "float64", "on cuda", ...).
Its helpers draw the inputs from a seeded generator, so a check with the same seed sees the
same numbers on every run and every machine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch

from ..schedules import alphas_cumprod_from_betas, make_betas
from ..utils import get_device

T_CHECK = 100  # a short linear schedule: neighbouring ᾱ_t differ enough to spot t ± 1


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape, gen, dtype, device):
    """Standard normal numbers drawn in float64 on the CPU (the same on every device)."""
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def random_timesteps(batch: int, T: int, gen, device, low: int = 1, high: Optional[int] = None):
    high = T - 1 if high is None else high  # away from both edges unless asked
    return torch.randint(low, high, (batch,), generator=gen).to(device)


def schedule(dtype, device, T: int = T_CHECK, name: str = "linear"):
    """(betas, alphas_cumprod) of a schedule, in ``dtype`` on ``device``."""
    betas = make_betas(name, T)
    return betas.to(device, dtype), alphas_cumprod_from_betas(betas).to(device, dtype)


@dataclass(frozen=True)
class Case:
    """One set of inputs for a check, shown as one line of the report.

    ``t`` says which timesteps: ``"mid"`` (random, away from both ends), ``"first"`` (t = 0),
    ``"last"`` (t = T − 1), or a rule that the check itself reads. ``options`` holds settings
    only one check reads (η and the skip of a DDIM step, whether to test the gradient)."""
    name: str
    shape: tuple = (4, 1, 5, 6)
    dtype: torch.dtype = torch.float32
    device: Union[str, torch.device] = "cpu"
    t: str = "mid"
    schedule: str = "linear"
    T: int = T_CHECK
    options: dict = field(default_factory=dict)

    def randn(self, gen: torch.Generator) -> torch.Tensor:
        """A tensor of the case's shape, dtype and device."""
        return randn(self.shape, gen, self.dtype, self.device)

    def timesteps(self, gen: torch.Generator) -> torch.Tensor:
        """(B,) long timesteps following the ``t`` rule ("mid" for a rule of the check's own)."""
        batch = self.shape[0]
        if self.t == "first":
            return torch.zeros(batch, dtype=torch.long, device=self.device)
        if self.t == "last":
            return torch.full((batch,), self.T - 1, dtype=torch.long, device=self.device)
        return random_timesteps(batch, self.T, gen, self.device)

    def betas_and_alphas_cumprod(self):
        """The case's schedule, (betas, alphas_cumprod), in its dtype on its device."""
        return schedule(self.dtype, self.device, self.T, self.schedule)

    def draw(self, seed: int):
        """The inputs of a one-step check, drawn in a fixed order from ``seed``: ``(betas,
        alphas_cumprod, first, second, t)`` with two tensors of the case's shape and (B,)
        timesteps following the ``t`` rule."""
        gen = generator(seed)
        betas, alphas_cumprod = self.betas_and_alphas_cumprod()
        first, second = self.randn(gen), self.randn(gen)
        return betas, alphas_cumprod, first, second, self.timesteps(gen)


def devices() -> list[torch.device]:
    """The best available device and the CPU, once each."""
    found = [get_device("auto"), torch.device("cpu")]
    return [d for i, d in enumerate(found) if d not in found[:i]]


def other_devices() -> list[torch.device]:
    return [d for d in devices() if d.type != "cpu"]


def timestep_cases() -> list[Case]:
    """The standard cases for a function of (x, t, schedule)."""
    cases = [Case("random t, float32, (4, 1, 5, 6) images"),
             Case("first step (t = 0)", (3, 1, 5, 6), t="first"),
             Case("last step (t = T − 1)", (3, 1, 5, 6), t="last"),
             Case("batch of 1", (1, 3, 4, 4)),
             Case("2-D points (5, 2)", (5, 2)),
             Case("float64", dtype=torch.float64)]
    return cases + [Case(f"on {d}", device=d) for d in other_devices()]


def with_cosine_case(cases: list[Case]) -> list[Case]:
    """``cases`` and one more on the cosine schedule with T = 50."""
    return cases + [Case("cosine schedule, T = 50", schedule="cosine", T=50)]


def call_unmodified(fn, inputs: list):
    """Call ``fn(*inputs)``; return (output, message) where the message is set when the
    function changed one of its input tensors in place (other arguments are passed as is)."""
    before = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in inputs]
    out = fn(*inputs)
    for b, a in zip(before, inputs):
        if isinstance(a, torch.Tensor) and not torch.equal(b, a.detach()):
            return out, "your function changed one of its input tensors in place; work on copies."
    return out, None


def parts_from_cases(cases: list[Case], run_case: Callable) -> list:
    """(part name, test) pairs; each test calls ``run_case(fn, case)``."""
    return [(case.name, (lambda fn, case=case: run_case(fn, case))) for case in cases]
