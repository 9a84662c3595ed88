"""Run a student's notebook in a fresh process and call its answers on the grader's inputs.

    python -m diffusion_tutorial.checks.sandbox REQUEST.json

The grader (:mod:`.verify`) starts this process; nothing here decides a grade. In order:

1. Make every question's inputs from the seeds in the request, delete the request, and keep
   hold of the few functions the rest needs (``type``, ``repr``, ``Tensor.tolist``,
   ``os.write``), before any student code runs, so that rebinding them later changes nothing
   here. Take the notebook's folder and the process's start folder off ``sys.path``, so that
   files the notebook wrote there cannot stand in for a module.
2. Note every attribute of torch, NumPy, builtins, math and this package.
3. Run the notebook's code cells in order (otter's ``grader`` lines left out; an error in a
   cell is noted and the next cell runs, as in a notebook).
4. Report which of those attributes the notebook rebound (the run-time probe), and whether it
   left a tracer, a profiler or a thread of its own running (tampering).
5. Call each graded function on the inputs while the package's own answers (schedules,
   process, samplers, reference solutions) compute a deliberately changed result and note
   that they were called, and while a profiler (:class:`PackageWatch`) notes every entry into
   the package's code from outside it: an answer that delegates is caught, also through a
   copy of a function or an object built outside the answer.
6. Write the outputs as plain numbers (``repr`` of lists, read back with ``ast.literal_eval``).

This process runs the student's code, so it cannot defend itself against code that reaches
into it (frames, ``__main__``, the garbage collector, the report file); the source audit
(:mod:`.audit`) finds such code, and the grader then trusts nothing this process reports.
"""
from __future__ import annotations

import ast
import builtins
import json
import math
import os
import sys
import threading
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
_setprofile, _getprofile, _gettrace = sys.setprofile, sys.getprofile, sys.gettrace
_thread_setprofile, _current_frames = threading.setprofile, sys._current_frames
_get_ident = threading.get_ident
STUDENT_FILE = "<student notebook cell {}>"
ALLOWED_HELPERS = {"ddim_timesteps", "extract"}  # helpers the questions offer
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
UTILS_FILE = os.path.join(PACKAGE_DIR, "utils.py")  # seeds, devices, timing: no answers
HARMLESS_FILES = {os.path.abspath(__file__), UTILS_FILE}  # this file (the Tracer's) and utils
# calls inside an answer that switch the watch off or reach into the process
TAMPERING_CALLS = {sys.setprofile: "sys.setprofile", sys.settrace: "sys.settrace",
                   threading.setprofile: "threading.setprofile", threading.settrace: "threading.settrace",
                   sys._getframe: "sys._getframe", os._exit: "os._exit", exec: "exec", eval: "eval",
                   compile: "compile"}


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


def allowed_codes() -> list:
    """The code objects an answer may run: the offered helpers and the grader's stand-in models."""
    from .. import diffusion as diffusion_module
    from . import questions
    helpers = [diffusion_module.extract, samplers.ddim_timesteps, questions.toy_model, questions.eps_exact]
    return [getattr(fn, "__wrapped__", fn).__code__ for fn in helpers]


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


class PackageWatch:
    """A profiler that, while active, notes every entry into the package's code from code
    outside the package (the answer), except the offered helpers and the grader's own stand-in
    models (``allowed``: code objects), and every call that would switch it off."""

    def __init__(self, allowed) -> None:
        self.allowed = set(allowed)
        self.entered: list[str] = []
        self.tampered: list[str] = []
        self.profiler = self.hook  # one bound method, so that sys.getprofile() can be compared

    @staticmethod
    def _package(code) -> bool:
        return code.co_filename.startswith(PACKAGE_DIR)

    def hook(self, frame, event, arg) -> None:
        if event == "c_call":
            try:
                what = TAMPERING_CALLS.get(arg)
            except TypeError:  # an unhashable callable
                what = None
            if what and what not in self.tampered and _unknown_code(frame.f_code.co_filename):
                self.tampered.append(what)
            return
        if event != "call":
            return
        code = frame.f_code
        if not self._package(code) or code.co_filename in HARMLESS_FILES or code in self.allowed:
            return
        caller = frame.f_back
        if caller is not None and self._package(caller.f_code) and caller.f_code.co_filename != UTILS_FILE:
            return  # inside the package (or inside an allowed helper): not an entry
        module = code.co_filename[len(PACKAGE_DIR):].rsplit(".", 1)[0].replace(os.sep, ".")
        label = f"{module}.{getattr(code, 'co_qualname', code.co_name)}"
        if label not in self.entered:
            self.entered.append(label)

    def __enter__(self):
        self.entered, self.tampered = [], []
        _thread_setprofile(self.profiler)
        _setprofile(self.profiler)
        return self

    def __exit__(self, *exc) -> None:
        if _getprofile() is not self.profiler and "sys.setprofile" not in self.tampered:
            self.tampered.append("sys.setprofile")
        _setprofile(None)
        _thread_setprofile(None)


def _unknown_code(filename: str) -> bool:
    """Code from the notebook, or compiled from a string (no file): the student's own."""
    return filename.startswith(STUDENT_FILE.split("{")[0]) or not (
        os.path.isabs(filename) or filename.startswith("<frozen"))


def left_running(threads_before: set) -> list[str]:
    """What the notebook left running that could act while its answers are graded: a tracer, a
    profiler, or a thread whose stack holds the notebook's code (or code with no file)."""
    found = ["a profiler (sys.setprofile)"] if _getprofile() is not None else []
    found += ["a tracer (sys.settrace)"] if _gettrace() is not None else []
    for ident, frame in _current_frames().items():
        if ident == _get_ident() or ident in threads_before:
            continue
        while frame is not None:
            if _unknown_code(frame.f_code.co_filename):
                found.append("a thread running the notebook's code")
                break
            frame = frame.f_back
    return found


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


def _keep_off_path(*folders: str) -> None:
    """Take ``folders`` (and the relative entries, which follow the working folder) off sys.path."""
    drop = {os.path.realpath(f) for f in folders if f}
    sys.path[:] = [p for p in sys.path if p and os.path.isabs(p) and os.path.realpath(p) not in drop]


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        request = json.load(f)
    os.remove(argv[0])  # the seeds stay in this function only
    out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    questions = ASSIGNMENTS[request["assignment"]]
    calls = {q.name: q.calls(torch.Generator().manual_seed(request["seeds"][q.name])) for q in questions}
    tracer = Tracer(answer_functions())
    watch = PackageWatch(allowed_codes())
    before = _watched()
    notebook_dir = request.get("cwd") or os.getcwd()
    _keep_off_path(os.getcwd(), notebook_dir)
    os.chdir(notebook_dir)
    threads_before = set(_current_frames())
    namespace, errors = run_notebook([tuple(c) for c in request["cells"]])
    report: dict[str, Any] = {"rebound": rebound(before), "errors": errors, "questions": {},
                              "tampered": left_running(threads_before)}
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
                with tracer, watch:
                    value = fn(*call.args)
                answers.append({"value": plain(value), "called": tracer.called + watch.entered,
                                "tampered": list(watch.tampered)})
            except BaseException as e:  # noqa: BLE001
                answers.append({"error": f"{_type(e).__name__}: {_str(e)[:200]}",
                                "called": tracer.called + watch.entered, "tampered": list(watch.tampered)})
        reads = {name: plain(namespace.get(name)) for name in q.reads}
        report["questions"][q.name] = {"answers": answers, "reads": reads}
    _write(out, _repr(report).encode("utf-8"))
    os.close(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
