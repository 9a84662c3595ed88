"""Read a notebook's source, without running it, and list what an honest answer does not contain.

Two kinds of :class:`Finding`:

* **flags**, for an instructor's look: rebinding functions of torch, NumPy, builtins or this
  package (which gains nothing: the grader compares outside the notebook); importing the
  package's reference answers; calling the package's own schedules, process or samplers inside
  an answer (also caught when the answer runs); hard-coded results; imports the assignment
  does not use.
* **tampering** (``Finding.tamper``): code that reaches into the Python process or the files
  the grader runs in: frames, the garbage collector, ``__main__``, ``sys``, ``os``, ``importlib``,
  ``pickle``, ``ctypes``, ``exec``/``eval``, ``getattr`` with a computed name, dunder attributes
  such as ``__dict__`` or ``__code__``, ``open``, shell commands and most IPython magics. No
  answer of the assignments needs any of these, and a notebook that uses them could have
  changed what the grader sees, so :mod:`.verify` grades none of its questions automatically.

Cells are read twice: as the grader's fresh process runs them (IPython lines blanked) and as
the Jupyter kernel runs them (IPython's own transformation, where ``x = !ls`` is a shell call).
Chapter: For instructors.
"""
from __future__ import annotations

import ast
import re
from typing import Iterable, NamedTuple, Optional

from .cells import code_cells, kernel_cells, parse

# Modules whose attributes a submission must not rebind, by their import names.
GUARDED_MODULES = ("torch", "numpy", "builtins", "math", "diffusion_tutorial", "otter", "scipy")
# Modules an honest notebook of the assignments may import; others are flagged.
USUAL_MODULES = frozenset({
    "torch", "numpy", "math", "cmath", "diffusion_tutorial", "otter", "matplotlib", "scipy", "random",
    "functools", "itertools", "collections", "typing", "dataclasses", "time", "tqdm", "statistics",
    "warnings", "copy", "numbers", "fractions", "decimal", "pprint", "textwrap", "string", "re",
    "enum", "abc", "contextlib", "operator", "json", "PIL", "seaborn", "pandas", "IPython"})
# Modules that reach into the Python process, other processes or the files: tampering.
PROCESS_MODULES = frozenset({
    "__main__", "sys", "os", "posix", "nt", "gc", "ctypes", "_ctypes", "inspect", "importlib", "imp",
    "pkgutil", "zipimport", "runpy", "types", "pickle", "_pickle", "dill", "cloudpickle", "marshal",
    "copyreg", "shelve", "subprocess", "multiprocessing", "threading", "_thread", "concurrent",
    "asyncio", "signal", "socket", "ssl", "http", "urllib", "requests", "shutil", "pathlib", "io",
    "tempfile", "glob", "fnmatch", "fileinput", "zipfile", "tarfile", "code", "codeop", "pdb", "bdb",
    "faulthandler", "atexit", "site", "sysconfig", "linecache", "dis", "tokenize", "traceback",
    "unittest", "pty", "resource", "mmap", "platform", "webbrowser"})
# The grader's own modules: importing them is tampering (harness is the checks' reference answers).
GRADER_MODULES = ("questions", "sandbox", "verify", "otter_plugin", "audit", "classroom")
# The package's functions and methods that compute an answer of an assignment. Calling one of
# them inside an answer is delegation (extract and ddim_timesteps are helpers the questions offer).
ANSWER_NAMES = frozenset({
    "linear_beta_schedule", "cosine_beta_schedule", "cosine_alphas_cumprod", "make_betas",
    "alphas_cumprod_from_betas", "GaussianDiffusion", "q_sample", "q_posterior", "mean_from_eps",
    "p_mean_variance", "p_sample", "ddim_step", "p_losses", "score_from_eps", "ddpm_sample",
    "ddim_sample", "sample", "to_model_range", "predict_x0_from_eps", "predict_eps_from_x0"})
# Built-in names that run code a reader cannot follow or reach into the process.
PROCESS_NAMES = {
    "exec": "exec()", "eval": "eval()", "compile": "compile()", "__import__": "__import__()",
    "globals": "globals()", "locals": "locals()", "vars": "vars()", "open": "open()",
    "breakpoint": "breakpoint()", "get_ipython": "get_ipython()", "__builtins__": "__builtins__",
    "__loader__": "__loader__", "__spec__": "__spec__", "__file__": "__file__"}
# Attribute names that lead into the process, whatever object they are read from.
PROCESS_ATTRIBUTES = frozenset({
    "sys", "os", "gc", "ctypes", "inspect", "importlib", "pickle", "dill", "marshal", "subprocess",
    "builtins", "modules", "argv", "_getframe", "currentframe", "setprofile", "settrace",
    "addaudithook", "getprofile", "gettrace", "_exit", "system", "popen", "fork", "kill", "getppid",
    "import_module", "reload", "get_objects", "get_referrers", "get_referents", "meta_path",
    "path_hooks", "spec_from_file_location", "module_from_spec", "exec_module", "load_module",
    "attrgetter", "methodcaller", "_C", "overrides", "library", "TorchFunctionMode",
    "TorchDispatchMode", "mock", "monkeypatch", "f_locals", "f_globals", "f_back", "f_code",
    "f_builtins", "tb_frame", "tb_next", "gi_frame", "cr_frame", "ag_frame", "co_code",
    "co_consts", "co_names", "co_filename", "ctypeslib", "exec", "eval", "__import__", "globals",
    "locals", "vars", "breakpoint", "get_ipython", "multiprocessing", "cpp_extension", "load_inline",
    "hub", "f2py", "tofile", "savetxt", "loadtxt", "genfromtxt", "fromfile", "memmap", "savez",
    "savez_compressed", "write_text", "write_bytes", "read_text", "read_bytes"})
# Functions that read or write files (a .pth or sitecustomize.py runs in every later process).
FILE_FUNCTIONS = frozenset({"torch.save", "torch.load", "numpy.save", "numpy.load"})
# Dunder attributes an honest notebook may read, and dunder methods it may define.
PLAIN_DUNDERS = frozenset({"__init__", "__name__", "__qualname__", "__doc__", "__version__", "__class__"})
PLAIN_DUNDER_METHODS = frozenset({"__init__", "__call__", "__repr__", "__str__", "__len__", "__getitem__",
                                  "__iter__", "__next__", "__enter__", "__exit__", "__post_init__"})
# IPython magics that change nothing outside the cell; pip/conda install packages (a flag).
PLAIN_MAGICS = frozenset({"matplotlib", "time", "timeit", "capture", "load_ext", "autoreload",
                          "config", "pinfo", "pinfo2", "who", "whos", "precision"})
INSTALL_MAGICS = frozenset({"pip", "conda", "mamba"})
ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "hasattr", "setattr", "delattr"})


TAMPERING = "reaches into the Python process or the grader's files"


class Finding(NamedTuple):
    """One line of the audit; ``tamper`` when the code reaches into the process or its files."""
    text: str
    tamper: bool = False


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


def _dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _constant_string(node) -> Optional[str]:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class _Auditor(ast.NodeVisitor):
    def __init__(self, graded: Iterable[str]) -> None:
        self.graded = set(graded)
        # local name -> the module or object it stands for; the usual names count without an import
        self.aliases: dict[str, str] = {"torch": "torch", "np": "numpy", "numpy": "numpy", "math": "math",
                                        "builtins": "builtins", "dt": "diffusion_tutorial"}
        self.findings: list[Finding] = []
        self.reaches: list[str] = []  # what reaches into the process (one tampering finding)
        self.function: Optional[str] = None  # the answer function being read

    def flag(self, text: str, tamper: bool = False) -> None:
        if all(f.text != text for f in self.findings):
            self.findings.append(Finding(text, tamper))

    def tamper(self, what: str) -> None:
        if what not in self.reaches:
            self.reaches.append(what)

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
            self._check_module(a.name)

    def visit_ImportFrom(self, node):
        module = "." * node.level + (node.module or "")
        self._check_module(module)
        for a in node.names:
            self.aliases[a.asname or a.name] = f"{module}.{a.name}"
            self._check_module(f"{module}.{a.name}")
            self._attribute_name(a.name, f"{module}.{a.name}")
            if f"{module}.{a.name}" in FILE_FUNCTIONS:
                self.tamper(f"{module}.{a.name}")
            if self.function and module.startswith("diffusion_tutorial") and a.name in ANSWER_NAMES:
                self.flag(f"{self.function} imports the package's {a.name} inside the answer")

    def _check_module(self, full: str) -> None:
        parts = full.split(".")
        if parts[0] in PROCESS_MODULES or full.startswith("."):
            self.tamper(f"imports {full}")
        elif parts[0] not in USUAL_MODULES:
            self.flag(f"imports {full}, which the assignment does not use")
        if parts[0] != "diffusion_tutorial":
            return
        if any(p.startswith("_") for p in parts):
            self.flag(f"imports the package's private {full}"
                      + (" (a reference solution)" if "_reference_" in full else ""))
        if len(parts) > 2 and parts[1] == "checks" and parts[2] in GRADER_MODULES:
            self.tamper(f"imports the grader's own {full}")
        elif len(parts) > 2 and parts[1] == "checks" and parts[2] == "harness":
            self.flag(f"imports the grader's internals {full}")

    # ---- rebinding
    def _target(self, target, verb="rebinds"):
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._target(t, verb)
            return
        if isinstance(target, ast.Starred):
            self._target(target.value, verb)
        if isinstance(target, ast.Attribute):
            full = self.guarded(_dotted(target))
            if full:
                self.flag(f"{verb} {full}")
        if isinstance(target, ast.Subscript) and _dotted(target.value) in {"__builtins__", "sys.modules"}:
            self.flag(f"{verb} {_dotted(target.value)}[...]")

    def visit_Assign(self, node):
        for t in node.targets:
            self._target(t)
        # `_f = dt.cosine_beta_schedule` makes `_f` stand for the package's function
        full = self.resolve(_dotted(node.value))
        if full and full.startswith("diffusion_tutorial"):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    self.aliases[t.id] = full
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
        if name in ATTRIBUTE_FUNCTIONS:
            self._attribute_call(name, node)
            for child in node.args + node.keywords:
                self.visit(child)
            return
        if (isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Call)
                and _dotted(node.func.value.func) == "get_ipython"):
            self._ipython(node)
            for arg in node.args[1:]:
                self.visit(arg)
            return
        self.generic_visit(node)

    def _attribute_call(self, name: str, node) -> None:
        """getattr/hasattr/setattr/delattr(obj, "name", ...)."""
        if node.args:
            attribute = _constant_string(node.args[1]) if len(node.args) > 1 else None
            if name in {"getattr", "hasattr"} and attribute is None:
                self.tamper(f"{name}() with a computed name")
            if attribute is not None:
                self._attribute_name(attribute, f"{_dotted(node.args[0]) or '...'}.{attribute}")
            full = self.guarded(_dotted(node.args[0]))
            if full and name in {"setattr", "delattr"}:
                self.flag(f"{'rebinds' if name == 'setattr' else 'deletes'} an attribute of {full} "
                          f"with {name}()")

    def _ipython(self, node) -> None:
        """``get_ipython().run_line_magic('name', ...)`` and friends, as IPython writes magics."""
        method = node.func.attr
        magic = _constant_string(node.args[0]) if node.args else None
        if method in {"run_line_magic", "run_cell_magic"} and magic in PLAIN_MAGICS:
            return
        if method in {"run_line_magic", "run_cell_magic"} and magic in INSTALL_MAGICS:
            self.flag(f"installs packages while it is graded (%{magic})")
            return
        what = f"the magic %{magic}" if magic else "a shell command" if method in {
            "system", "getoutput"} else f"get_ipython().{method}"
        self.tamper(what)

    # ---- references: private names, delegation, the process
    def _attribute_name(self, attr: str, dotted: str) -> None:
        if _dunder(attr) and attr not in PLAIN_DUNDERS:
            self.tamper(dotted)
        elif attr in PROCESS_ATTRIBUTES:
            self.tamper(dotted)

    def visit_Attribute(self, node):
        dotted = _dotted(node)
        full = self.resolve(dotted)
        private = node.attr.startswith("_") and not _dunder(node.attr)
        if full and full.startswith("diffusion_tutorial") and private:
            self._check_module(full)
        if self.function and node.attr in ANSWER_NAMES and (
                (full and full.startswith("diffusion_tutorial"))
                or (node.attr != "sample" and (dotted or "").split(".")[0] != "self")):
            self.flag(f"{self.function} calls the package's {node.attr} ({dotted or node.attr})")
        self._attribute_name(node.attr, dotted or f"...{node.attr}")
        builtin = full and full.split(".")[0] == "builtins" and node.attr in PROCESS_NAMES
        if full in FILE_FUNCTIONS or builtin:
            self.tamper(dotted)
        self.generic_visit(node)

    def visit_Name(self, node):
        if node.id in ATTRIBUTE_FUNCTIONS:  # not called: passed on, e.g. to functools.reduce
            self.tamper(f"{node.id} passed as a value")
        if isinstance(node.ctx, ast.Store) and _dunder(node.id) and node.id not in PLAIN_DUNDER_METHODS:
            self.tamper(f"assigns {node.id}")
        full = self.aliases.get(node.id)
        answer = full.split(".")[-1] if full else ""
        if self.function and full and full.startswith("diffusion_tutorial") and answer in ANSWER_NAMES:
            self.flag(f"{self.function} calls the package's {answer}"
                      + ("" if node.id == answer else f" ({node.id})"))
        if node.id.startswith("_reference_"):
            self.flag(f"uses the package's reference solution {node.id}")
        if node.id in PROCESS_NAMES:
            self.tamper(PROCESS_NAMES[node.id])

    def visit_Constant(self, node):  # {"__reduce__": ...}, type("X", (), {...})
        plain = PLAIN_DUNDERS | {"__main__"}
        if isinstance(node.value, str) and _dunder(node.value) and node.value not in plain:
            self.tamper(repr(node.value))

    def visit_ClassDef(self, node):  # `class Mine(dt.GaussianDiffusion)` stands for the package's own
        for base in node.bases:
            full = self.resolve(_dotted(base))
            if full and full.startswith("diffusion_tutorial"):
                self.aliases[node.name] = full
        self.generic_visit(node)

    def visit_MatchClass(self, node):  # `case C(__dict__=d)` reads attributes by name
        for attr in node.kwd_attrs:
            self._attribute_name(attr, f"...{attr} (in a match pattern)")
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        if _dunder(node.name) and node.name not in PLAIN_DUNDER_METHODS:
            self.tamper(f"defines {node.name}")
        outer = self.function
        if self.function is None and node.name in self.graded:
            self.function = node.name
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef


def _significant_digits(value: float) -> int:
    digits = re.sub(r"[^0-9]", "", f"{abs(value):.15g}".split("e")[0]).lstrip("0")
    return len(digits)


def _docstrings(tree: ast.AST) -> set:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def hard_coded(tree: ast.AST) -> list[str]:
    """Literal data that looks computed elsewhere: numbers with five or more significant digits,
    a collection of three or more non-integer numbers, a long string or bytes literal."""
    found = []
    docstrings = _docstrings(tree)
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
        elif (isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))
              and len(node.value) >= 200 and id(node) not in docstrings):
            found.append(f"a {len(node.value)}-character {type(node.value).__name__} literal")
    return found


def audit_source(nb, graded: Iterable[str] = ()) -> list[Finding]:
    """The findings of every code cell, read as the grader's process and as the kernel run it."""
    auditor = _Auditor(graded)
    blanked, kernel = dict(code_cells(nb)), dict(kernel_cells(nb))
    for index, source in blanked.items():
        tree, kernel_tree = parse(source), parse(kernel.get(index, source))
        if tree is None and kernel_tree is None:
            auditor.flag(f"cell {index} is not valid Python")
        for t in (tree, kernel_tree):
            if t is None:
                continue
            function, auditor.function = auditor.function, None
            auditor.visit(t)
            auditor.function = function
        numbers = hard_coded(tree or kernel_tree) if (tree or kernel_tree) else []
        if numbers:
            auditor.flag(f"hard-coded numbers in cell {index}: {', '.join(numbers[:3])}")
    if auditor.reaches:
        shown = ", ".join(auditor.reaches[:6]) + (f" and {len(auditor.reaches) - 6} more"
                                                  if len(auditor.reaches) > 6 else "")
        auditor.findings.insert(0, Finding(f"{TAMPERING}: {shown}", True))
    return auditor.findings
