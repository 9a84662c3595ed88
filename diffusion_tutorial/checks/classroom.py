"""The classroom side of the checks: who handed a notebook in, their own random inputs, and
what in the notebook's source needs an instructor's look.

* :func:`student_seed` turns a student's identifier into a seed, so that every student gets
  different inputs (and the numbers of one student don't pass for another).
* :func:`student_id_literal` and :func:`student_id` read the identifier from a submission:
  the ``STUDENT_ID = "..."`` line the student fills in, else the notebook metadata field
  ``diffusion_tutorial.student_id`` (which a learning platform can stamp), else a fallback
  such as the file name.
* :func:`audit_notebook` reads the source, without running it, and lists what an honest
  solution does not contain: rebinding functions of torch, NumPy, builtins or this package;
  importing the package's reference answers; calling the package's own schedules, process or
  samplers inside an answer; hard-coded results; code that hides from a reader.

The run-time side (running the answers again in a fresh process) is
:mod:`diffusion_tutorial.checks.verify`. Chapter: For instructors.
"""
from __future__ import annotations

import ast
import hashlib
import re
from typing import Iterable, Optional

STUDENT_ID_VARIABLE = "STUDENT_ID"
METADATA_KEY = "diffusion_tutorial"

# Modules whose attributes a submission must not rebind, by their import names.
GUARDED_MODULES = ("torch", "numpy", "builtins", "math", "diffusion_tutorial", "otter", "scipy")
# The package's functions and methods that compute an answer of an assignment. Calling one of
# them inside an answer is delegation (extract and ddim_timesteps are helpers the questions offer).
ANSWER_NAMES = frozenset({
    "linear_beta_schedule", "cosine_beta_schedule", "cosine_alphas_cumprod", "make_betas",
    "alphas_cumprod_from_betas", "GaussianDiffusion", "q_sample", "q_posterior", "mean_from_eps",
    "p_mean_variance", "p_sample", "ddim_step", "p_losses", "score_from_eps", "ddpm_sample",
    "ddim_sample", "sample", "to_model_range", "predict_x0_from_eps", "predict_eps_from_x0"})
# Code a reader cannot follow, or that reaches into the grader: flagged for a human look.
HIDING = {"exec": "exec()", "eval": "eval()", "compile": "compile()", "__import__": "__import__()",
          "_getframe": "sys._getframe", "currentframe": "inspect.currentframe", "ctypes": "ctypes",
          "TorchFunctionMode": "a torch function mode", "TorchDispatchMode": "a torch dispatch mode",
          "__code__": "a function's __code__", "globals": "globals()", "gc": "the gc module",
          "mock": "unittest.mock", "monkeypatch": "monkeypatch", "sys.modules": "sys.modules"}


def student_seed(student_id: str, purpose: str) -> int:
    """A seed in [0, 2³²) drawn from a student's identifier and a purpose (an assignment or a
    question), the same on every machine: ``sha256(purpose NUL student_id)``."""
    digest = hashlib.sha256(f"{purpose}\0{student_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


# ============================================================ reading a notebook
def code_cells(nb) -> list[tuple[int, str]]:
    """(index, Python source) of every code cell, IPython magics and shell lines blanked."""
    cells = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n")]
        cells.append((i, "\n".join(lines)))
    return cells


def _parse(source: str) -> Optional[ast.Module]:
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def _student_id_values(nb) -> list:
    """The expressions assigned to ``STUDENT_ID`` at the top level, in order."""
    values = []
    for _, source in code_cells(nb):
        tree = _parse(source)
        for node in (tree.body if tree else []):
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == STUDENT_ID_VARIABLE for t in node.targets):
                values.append(node.value)
    return values


def student_id_literal(nb) -> str:
    """The string assigned to ``STUDENT_ID`` at the top level of the notebook ("" if none or
    if it is not a plain string). This is what the notebook's own code sees."""
    values = _student_id_values(nb)
    last = values[-1] if values else None
    return last.value.strip() if isinstance(last, ast.Constant) and isinstance(last.value, str) else ""


def student_id(nb, fallback: str) -> tuple[str, str]:
    """(identifier, where it came from): the STUDENT_ID cell, the metadata field, or ``fallback``."""
    literal = student_id_literal(nb)
    if literal:
        return literal, "STUDENT_ID cell"
    stamped = str(nb.get("metadata", {}).get(METADATA_KEY, {}).get("student_id", "")).strip()
    if stamped:
        return stamped, "notebook metadata"
    return fallback, "file name"


# ============================================================ the audit
def _dotted(node) -> Optional[str]:
    """'a.b.c' for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id] + parts[::-1])
    return None


class _Auditor(ast.NodeVisitor):
    def __init__(self, graded: Iterable[str]) -> None:
        self.graded = set(graded)
        # local name -> the module or object it imports; the usual names count without an import
        self.aliases: dict[str, str] = {"torch": "torch", "np": "numpy", "numpy": "numpy", "math": "math",
                                        "builtins": "builtins", "dt": "diffusion_tutorial"}
        self.flags: list[str] = []
        self.function: Optional[str] = None  # the answer function being read

    def flag(self, text: str) -> None:
        if text not in self.flags:
            self.flags.append(text)

    def resolve(self, dotted: Optional[str]) -> Optional[str]:
        """The full name of a dotted reference whose first part is an import alias."""
        if not dotted:
            return None
        head, _, rest = dotted.partition(".")
        if head == "__builtins__":
            return "builtins" + ("." + rest if rest else "")
        full = self.aliases.get(head)
        return None if full is None else full + ("." + rest if rest else "")

    def guarded(self, dotted: Optional[str]) -> Optional[str]:
        full = self.resolve(dotted)
        return full if full and full.split(".")[0] in GUARDED_MODULES else None

    # ---- imports
    def visit_Import(self, node):
        for a in node.names:
            self.aliases[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            self._check_private(a.name)

    def visit_ImportFrom(self, node):
        module = node.module or ""
        for a in node.names:
            self.aliases[a.asname or a.name] = f"{module}.{a.name}"
            self._check_private(f"{module}.{a.name}")
            if self.function and module.startswith("diffusion_tutorial") and a.name in ANSWER_NAMES:
                self.flag(f"{self.function} imports the package's {a.name} inside the answer")

    def _check_private(self, full: str) -> None:
        if full.startswith("diffusion_tutorial") and any(p.startswith("_") for p in full.split(".")):
            self.flag(f"imports the package's private {full}"
                      + (" (a reference solution)" if "_reference_" in full else ""))
        if full.startswith("diffusion_tutorial.checks.") and full.split(".")[2] in {"harness", "verify"}:
            self.flag(f"imports the grader's internals {full}")

    # ---- rebinding
    def _target(self, target, verb="rebinds"):
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._target(t, verb)
            return
        if isinstance(target, ast.Attribute):
            full = self.guarded(_dotted(target))
            if full:
                self.flag(f"{verb} {full}")
        if isinstance(target, ast.Subscript) and _dotted(target.value) in {"__builtins__", "sys.modules"}:
            self.flag(f"{verb} {_dotted(target.value)}[...]")

    def visit_Assign(self, node):
        for t in node.targets:
            self._target(t)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        self._target(node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node):
        self._target(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node):
        for t in node.targets:
            self._target(t, "deletes")

    def visit_Call(self, node):
        name = _dotted(node.func)
        if name in {"setattr", "delattr"} and node.args:
            full = self.guarded(_dotted(node.args[0]))
            if full:
                self.flag(f"{'rebinds' if name == 'setattr' else 'deletes'} an attribute of {full} "
                          f"with {name}()")
        self.generic_visit(node)

    # ---- references: private names, delegation, hiding
    def visit_Attribute(self, node):
        dotted = _dotted(node)
        full = self.resolve(dotted)
        if full and full.startswith("diffusion_tutorial") and node.attr.startswith("_"):
            self._check_private(full)
        if self.function and node.attr in ANSWER_NAMES and (
                (full and full.startswith("diffusion_tutorial"))
                or (dotted and dotted.split(".")[0] not in {"self"} and node.attr != "sample")):
            self.flag(f"{self.function} calls the package's {node.attr} ({dotted or node.attr})")
        self._hiding(dotted or node.attr)
        self.generic_visit(node)

    def visit_Name(self, node):
        full = self.aliases.get(node.id)
        if self.function and full and full.startswith("diffusion_tutorial") and node.id in ANSWER_NAMES:
            self.flag(f"{self.function} calls the package's {node.id}")
        if node.id.startswith("_reference_"):
            self.flag(f"uses the package's reference solution {node.id}")
        self._hiding(node.id)

    def _hiding(self, name: str) -> None:
        for key, what in HIDING.items():
            if name == key or name.endswith("." + key) or name.startswith(key + "."):
                self.flag(f"uses {what}: code that a reader or the grader cannot follow")

    def visit_FunctionDef(self, node):
        outer = self.function
        if self.function is None and node.name in self.graded:
            self.function = node.name
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef


def _significant_digits(value: float) -> int:
    digits = re.sub(r"[^0-9]", "", f"{abs(value):.15g}".split("e")[0]).lstrip("0")
    return len(digits)


def _hard_coded(tree: ast.AST) -> list[str]:
    """Literal numbers that look computed elsewhere: five or more significant digits, or a
    collection of three or more non-integer numbers."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            items = node.values if isinstance(node, ast.Dict) else node.elts
            floats = [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, float)
                      and i.value != int(i.value)]
            if len(floats) >= 3:
                found.append(ast.unparse(node)[:60])
        elif (isinstance(node, ast.Constant) and isinstance(node.value, float)
              and _significant_digits(node.value) >= 5):
            found.append(repr(node.value))
    return found


def audit_notebook(nb, graded: Iterable[str] = ()) -> list[str]:
    """What in the notebook's source needs an instructor's look, one line each (empty for an
    honest solution). ``graded`` names the answer functions, where calls of the package's own
    answers count as delegation."""
    auditor = _Auditor(graded)
    for index, source in code_cells(nb):
        tree = _parse(source)
        if tree is None:
            continue
        auditor.visit(tree)
        numbers = _hard_coded(tree)
        if numbers:
            auditor.flag(f"hard-coded numbers in cell {index}: {', '.join(numbers[:3])}")
    if any(not (isinstance(v, ast.Constant) and isinstance(v.value, str)) for v in _student_id_values(nb)):
        auditor.flag(f"{STUDENT_ID_VARIABLE} is not a plain string")
    return auditor.flags
