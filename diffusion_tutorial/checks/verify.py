"""Grade a submission's answers again, outside the student's kernel, where nothing the
notebook rebinds can reach the comparison.

:func:`verify_notebook` runs the notebook in a fresh process (:mod:`.sandbox`), calls each
graded function on inputs drawn from the student's own seed on a schedule of its own, and
compares the outputs, in this process, with the package's reference. A question passes only
if every call matches, the function was written in the notebook (not taken from the
package), and it computed its answer itself: while it runs, the package's own schedules,
process, samplers and reference solutions return a deliberately changed result, so a
function that delegates to them fails, and the report names the function it called.

The Otter plugin (:mod:`.otter_plugin`) calls this after Otter has graded a submission in the
student's kernel and sets a question to 0 when it fails here. Chapter: For instructors.
"""
from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .classroom import audit_notebook, code_cells, student_id_literal
from .questions import ASSIGNMENTS, Question, question_seed


@dataclass
class Verdict:
    """A question's outcome; ``flag`` is set when the way it failed needs an instructor's look."""
    passed: bool
    message: str = ""
    flag: str = ""


@dataclass
class Verification:
    """Per question a :class:`Verdict`; ``flags`` lists what an instructor should look at."""
    questions: dict[str, Verdict] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    error: str = ""

    def report(self) -> str:
        lines = ["Run again outside the notebook, on inputs of the student's own:"]
        lines += [f"  {name}: {'passed' if v.passed else 'FAILED: ' + v.message}"
                  for name, v in self.questions.items()]
        if self.error:
            lines.append(f"  could not run the notebook: {self.error}")
        lines += [f"FLAG: {flag}" for flag in self.flags]
        return "\n".join(lines)


def read_report(text: str):
    """The sandbox's ``repr`` output, with nan and inf read as floats."""
    tree = ast.parse(text, mode="eval")

    class Numbers(ast.NodeTransformer):
        def visit_Name(self, node):
            if node.id in {"nan", "inf"}:
                return ast.copy_location(ast.Constant(float(node.id)), node)
            raise ValueError(f"unexpected name {node.id!r} in the sandbox's report")
    return ast.literal_eval(Numbers().visit(tree))


def _tensor(value) -> Optional[torch.Tensor]:
    if isinstance(value, float):
        return torch.tensor(value, dtype=torch.float64)
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "tensor":
        try:
            return torch.tensor(value[1], dtype=torch.float64)
        except (TypeError, ValueError):
            return None
    return None


def _mismatch(got, expected, tolerance, label: str) -> Optional[str]:
    """None if the plain output ``got`` matches the reference ``expected`` (tensors or a pair)."""
    if isinstance(expected, tuple):  # the posterior's (mean, variance)
        if not (isinstance(got, tuple) and got[0] == "tuple" and len(got[1]) == len(expected)):
            return f"on {label}: expected {len(expected)} results"
        for i, (g, e) in enumerate(zip(got[1], expected)):
            g_t = _tensor(g)
            if g_t is not None and e.ndim and g_t.ndim and g_t.shape != e.shape:
                try:
                    g_t, e = torch.broadcast_tensors(g_t, e.double())
                except RuntimeError:
                    return f"on {label}: result {i + 1} has shape {tuple(g_t.shape)}"
            message = _mismatch(g if g_t is None else ("tensor", g_t.tolist()), e, tolerance, label)
            if message:
                return message
        return None
    g = _tensor(got)
    e = expected.detach().double().cpu()
    if g is None:
        return f"on {label}: not a tensor ({got[1] if isinstance(got, tuple) else type(got).__name__})"
    if g.shape != e.shape:
        return f"on {label}: shape {tuple(g.shape)}, expected {tuple(e.shape)}"
    atol, rtol = tolerance
    if not torch.allclose(g, e, atol=atol, rtol=rtol):
        finite = torch.isfinite(g)
        worst = (g - e).abs()[finite].max() if finite.any() else math.nan
        return f"on {label}: differs from the reference by up to {float(worst):.3g}" + (
            "" if finite.all() else " and contains NaN or inf")
    return None


def _verdict(question: Question, calls, result: dict, student_id: str) -> Verdict:
    for call, answer in zip(calls, result["answers"]):
        if "origin" in answer:
            text = f"{call.function} is {answer['origin']}"
            return Verdict(False, f"{text}: write the function in the notebook", flag=text)
        called = answer.get("called") or []
        if called:
            text = f"{call.function} calls the package's {', '.join(called)}"
            return Verdict(False, f"{text}: write the computation yourself (while it runs, the "
                                  "package answers differently on purpose)", flag=f"{text} (delegation)")
        if "error" in answer:
            return Verdict(False, f"on {call.label}: {answer['error']}")
        message = _mismatch(answer["value"], question.reference(*call.args), call.tolerance, call.label)
        if message:
            return Verdict(False, message)
    if question.check_reads:
        message = question.check_reads(result["reads"], student_id)
        if message:
            return Verdict(False, message)
    return Verdict(True)


def graded_functions(assignment: str) -> list[str]:
    return [name for q in ASSIGNMENTS[assignment] for name in q.graded]


def run_sandbox(nb, notebook_dir: str, assignment: str, seeds: dict, timeout: int) -> dict:
    """The sandbox's report for a notebook (raises RuntimeError if it gave none)."""
    with tempfile.TemporaryDirectory() as tmp:
        request, out = Path(tmp) / "request.json", Path(tmp) / "report.txt"
        request.write_text(json.dumps({"assignment": assignment, "seeds": seeds, "out": str(out),
                                       "cwd": notebook_dir, "cells": code_cells(nb)}), encoding="utf-8")
        env = dict(os.environ, MPLBACKEND="Agg")
        try:
            proc = subprocess.run([sys.executable, "-m", "diffusion_tutorial.checks.sandbox", str(request)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the notebook did not finish within {timeout} s") from None
        text = out.read_text(encoding="utf-8") if out.exists() else ""
        if not text:
            tail = (proc.stderr or "").strip().splitlines()
            raise RuntimeError("the notebook stopped the grader's process before it reported"
                               + (f" ({tail[-1]})" if tail else f" (exit code {proc.returncode})"))
        return read_report(text)


def verify_notebook(nb, assignment: str, student_id: str, *, secret: str = "",
                    notebook_dir: Optional[str] = None, timeout: int = 600) -> Verification:
    """Run ``nb`` (a notebook dict) again in a fresh process and judge every autograded
    question; ``student_id`` seeds the hidden inputs (with the course's ``secret``)."""
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {assignment!r}: choose one of {', '.join(ASSIGNMENTS)}")
    questions = ASSIGNMENTS[assignment]
    verification = Verification(flags=audit_notebook(nb, graded_functions(assignment)))
    seeds = {q.name: question_seed(student_id, assignment, q.name, secret) for q in questions}
    try:
        report = run_sandbox(nb, notebook_dir or os.getcwd(), assignment, seeds, timeout)
    except RuntimeError as e:
        verification.error = str(e)
        verification.questions = {q.name: Verdict(False, str(e)) for q in questions}
        return verification
    verification.flags += [f"rebinds {name} (seen when the notebook ran)" for name in report["rebound"]]
    literal = student_id_literal(nb)
    for q in questions:
        calls = q.calls(torch.Generator().manual_seed(seeds[q.name]))
        verdict = _verdict(q, calls, report["questions"][q.name], literal)
        verification.questions[q.name] = verdict
        if verdict.flag and verdict.flag not in verification.flags:
            verification.flags.append(verdict.flag)
    return verification


def verify_file(path, assignment: str, student_id: str, **kwargs) -> Verification:
    """:func:`verify_notebook` for a notebook file, run from its folder."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    return verify_notebook(nb, assignment, student_id, notebook_dir=str(path.parent.resolve()), **kwargs)
