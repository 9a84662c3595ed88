"""Run a student's notebook in a fresh process and call its answers on the grader's inputs.

    python -m diffusion_tutorial.checks.sandbox REQUEST.json

The grader (:mod:`.verify`) starts this process; nothing here decides a grade. In order:

1. Make every question's inputs from the seeds in the request, and keep hold of the few
   functions the rest needs (``type``, ``repr``, ``Tensor.tolist``, ``os.write``), before any
   student code runs, so that rebinding them later changes nothing here.
2. Note every attribute of torch, NumPy, builtins, math and this package.
3. Run the notebook's code cells in order (otter's ``grader`` lines left out; an error in a
   cell is noted and the next cell runs, as in a notebook).
4. Report which of those attributes the notebook rebound (the run-time probe).
5. Call each graded function on the inputs while the package's own answers (schedules,
   process, samplers, reference solutions) compute a deliberately changed result and note
   that they were called: an answer that delegates to them is caught.
6. Write the outputs as plain numbers (``repr`` of lists, read back with ``ast.literal_eval``).
"""
from __future__ import annotations

import ast
import builtins
import json
import math
import os
import sys
import types
from typing import Any

import numpy
import torch

from .. import data, diffusion, samplers, schedules
from . import harness
from .questions import ASSIGNMENTS

# captured before any student code runs
_type, _repr, _isinstance, _len, _str = type, repr, isinstance, len, str
_Tensor, _tolist, _detach, _cpu = torch.Tensor, torch.Tensor.tolist, torch.Tensor.detach, torch.Tensor.cpu
_write, _FunctionType = os.write, types.FunctionType
STUDENT_FILE = "<student notebook cell {}>"
ALLOWED_HELPERS = {"ddim_timesteps", "extract"}  # helpers the questions offer


# ============================================================ 2, 4: the run-time probe
def _watched() -> dict[str, dict]:
    """name -> attribute dict of every module and class whose rebinding is a flag."""
    spaces = {"builtins": builtins, "math": math, "torch": torch, "torch.Tensor": torch.Tensor,
              "torch.testing": torch.testing, "torch.nn.functional": torch.nn.functional,
              "numpy": numpy, "numpy.testing": numpy.testing,
              "diffusion_tutorial.diffusion.GaussianDiffusion": diffusion.GaussianDiffusion}
    spaces.update({name: module for name, module in sys.modules.items()
                   if name.startswith("diffusion_tutorial") and module is not None})
    return {name: dict(vars(space)) for name, space in spaces.items()}


def rebound(before: dict[str, dict]) -> list[str]:
    """Attributes whose value is no longer the one noted in ``before`` (or that were deleted)."""
    after = _watched()
    changed = []
    for space, attributes in before.items():
        now = after.get(space, {})
        changed += [f"{space}.{key}" for key, value in attributes.items()
                    if key not in now or now[key] is not value]
    return sorted(changed)


# ============================================================ 3: the notebook
def _runnable(source: str):
    """The cell's code without otter's ``grader`` lines, or None if it does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    keep = []
    for node in tree.body:
        names = {n.id for n in ast.walk(node) if _isinstance(n, ast.Name)}
        imports_otter = _isinstance(node, (ast.Import, ast.ImportFrom)) and any(
            (getattr(node, "module", None) or a.name).split(".")[0] == "otter" for a in node.names)
        if "grader" not in names and not imports_otter:
            keep.append(node)
    tree.body = keep
    return tree


def run_notebook(cells: list[tuple[int, str]]) -> tuple[dict, list[str]]:
    """Execute the cells in one namespace; return it and the cells' errors."""
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    errors = []
    for index, source in cells:
        tree = _runnable(source)
        if tree is None:
            errors.append(f"cell {index}: SyntaxError")
            continue
        try:
            exec(compile(tree, STUDENT_FILE.format(index), "exec"), namespace)
        except BaseException as e:  # noqa: BLE001 - a student's error must not stop the run
            errors.append(f"cell {index}: {_type(e).__name__}: {_str(e)[:200]}")
    return namespace, errors


# ============================================================ 5: tracing the package's answers
def answer_functions() -> list[tuple[str, types.FunctionType]]:
    """(label, function) for every Python function of the package that computes an answer."""
    found = []

    def add(label, fn):
        while hasattr(fn, "__wrapped__"):  # decorated (torch.no_grad): trace the inner function
            fn = fn.__wrapped__
        if _isinstance(fn, _FunctionType) and not fn.__closure__:
            found.append((label, fn))

    for module in (schedules, samplers, data):
        for name, fn in vars(module).items():
            ours = callable(fn) and getattr(fn, "__module__", None) == module.__name__
            helper = name.startswith("_") or name in ALLOWED_HELPERS
            if ours and not _isinstance(fn, type) and not helper:
                add(f"{module.__name__.split('.')[-1]}.{name}", fn)
    for name, fn in vars(diffusion.GaussianDiffusion).items():
        if not name.startswith("__"):
            add(f"GaussianDiffusion.{name}", fn)
    for name, fn in vars(harness).items():
        if name.startswith("_reference_") or name == "diffusion_for":
            add(f"checks.{name}", fn)
    return found


def _changed(value):
    """A deliberately wrong answer: every floating tensor scaled by 0.97."""
    if _isinstance(value, torch.Tensor) and value.is_floating_point():
        return value * 0.97
    if _isinstance(value, (tuple, list)):
        return _type(value)(_changed(v) for v in value)
    if _isinstance(value, dict):
        return {k: _changed(v) for k, v in value.items()}
    return value


class Tracer:
    """While active, each package answer function returns a changed result and is noted."""
    TRAMPOLINE = "def traced(*args, **kwargs):\n    return __diffusion_tutorial_trace__({}, args, kwargs)\n"

    def __init__(self, functions) -> None:
        self.entries = []
        for key, (label, fn) in enumerate(functions):
            original = _FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__)
            original.__kwdefaults__ = fn.__kwdefaults__
            scope: dict = {}
            exec(self.TRAMPOLINE.format(key), scope)
            self.entries.append((label, fn, fn.__code__, original, scope["traced"].__code__))
        self.called: list[str] = []  # the package functions the student's code called itself
        self.depth = 0

    def dispatch(self, key, args, kwargs):
        label, _, _, original, _ = self.entries[key]
        if self.depth == 0 and label not in self.called:
            self.called.append(label)
        self.depth += 1
        try:
            return _changed(original(*args, **kwargs))
        finally:
            self.depth -= 1

    def __enter__(self):
        self.called, self.depth = [], 0
        for _, fn, _, _, traced in self.entries:
            fn.__globals__["__diffusion_tutorial_trace__"] = self.dispatch
            fn.__code__ = traced
        return self

    def __exit__(self, *exc) -> None:
        for _, fn, code, _, _ in self.entries:
            fn.__code__ = code


# ============================================================ 6: plain numbers out
def plain(value, depth: int = 0):
    """Numbers, strings and containers of them; a tensor becomes ("tensor", nested lists)."""
    if depth > 4:
        return ("other", "too deeply nested")
    if _type(value) is _Tensor:
        listed = _tolist(_cpu(_detach(value)))
        return listed if _isinstance(listed, float) else ("tensor", listed)
    if _type(value) in (float, int, bool, _str) or value is None:
        return value
    if _type(value) in (tuple, list):
        return ("tuple", [plain(v, depth + 1) for v in value])
    if _type(value) is dict:
        return {plain(k, depth + 1): plain(v, depth + 1) for k, v in value.items()}
    return ("other", _type(value).__name__)


def _origin(fn) -> str:
    """"" for a function written in the notebook, else where it comes from."""
    code = getattr(fn, "__code__", None)
    if code is None or not _isinstance(fn, _FunctionType):
        return f"a {_type(fn).__name__}, not a function written in the notebook"
    if not code.co_filename.startswith(STUDENT_FILE.split("{")[0]):
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
    return ""


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        request = json.load(f)
    out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    questions = ASSIGNMENTS[request["assignment"]]
    calls = {q.name: q.calls(torch.Generator().manual_seed(request["seeds"][q.name])) for q in questions}
    tracer = Tracer(answer_functions())
    before = _watched()
    os.chdir(request.get("cwd") or os.getcwd())
    namespace, errors = run_notebook([tuple(c) for c in request["cells"]])
    report: dict[str, Any] = {"rebound": rebound(before), "errors": errors, "questions": {}}
    for q in questions:
        answers = []
        for call in calls[q.name]:
            fn = namespace.get(call.function)
            if fn is None:
                answers.append({"error": f"{call.function} is not defined"})
                continue
            if _origin(fn):
                answers.append({"origin": _origin(fn)})
                continue
            try:
                with tracer:
                    value = fn(*call.args)
                answers.append({"value": plain(value), "called": list(tracer.called)})
            except BaseException as e:  # noqa: BLE001
                answers.append({"error": f"{_type(e).__name__}: {_str(e)[:200]}",
                                "called": list(tracer.called)})
        reads = {name: plain(namespace.get(name)) for name in q.reads}
        report["questions"][q.name] = {"answers": answers, "reads": reads}
    _write(out, _repr(report).encode("utf-8"))
    os.close(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
