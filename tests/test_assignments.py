"""The assignments build, their solutions earn full marks, and their checks catch mistakes.

Builds every assignment with Otter Assign into a temporary folder, grades the solution
notebooks with the real autograder (`otter run`, in parallel), and runs the student editions
in-process: blank, with a correct answer filled in, and with typical wrong answers, asserting
that the public and hidden tests fail with the message that names the mistake.
"""
import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import yaml

pytest.importorskip("otter")
from otter.test_files.exception_test import ExceptionTestFile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p.stem for p in (ROOT / "assignments" / "source").glob("*.ipynb"))
AUTOGRADED = {"forward_process": ["scale_to_model_range", "q_sample", "cosine_schedule"],
              "reverse_process": ["posterior", "mean_from_eps", "ddpm_step"],
              "loss_and_sampling": ["loss", "p_losses", "ddim_step", "score_from_eps",
                                    "ddim_experiment"]}
OTTER = [sys.executable, "-m", "otter"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    proc = _bash("--out", str(out), "--no-run-tests")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def test_every_source_is_listed():
    assert SOURCES == sorted(AUTOGRADED)


def test_sources_are_committed_without_outputs():
    for name in SOURCES:
        nb = nbformat.read(ROOT / "assignments" / "source" / f"{name}.ipynb", 4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), name


def make_submission(built, name, folder, student, answers=None, setup=""):
    """The student edition with the solutions, some answers replaced, ``setup`` appended to the
    first code cell and ``STUDENT_ID`` filled in, written to ``folder/<name>/<student>.ipynb``."""
    nb = nbformat.read(built / name / "student" / f"{name}.ipynb", 4)
    for question in AUTOGRADED[name]:
        code = (answers or {}).get(question) or solution_code(built, name, question)
        _answer_cell(nb, question).source = code
    first = next(c for c in nb.cells if c.cell_type == "code" and 'STUDENT_ID = ""' in c.source)
    first.source = first.source.replace('STUDENT_ID = ""', f'STUDENT_ID = "{student}"') + "\n" + setup
    (folder / name).mkdir(exist_ok=True)
    path = folder / name / f"{student}.ipynb"
    nbformat.write(nb, path)
    return path


PATCHES = """
import builtins
torch.allclose = lambda *a, **k: True                 # every comparison passes in this kernel
torch.testing.assert_close = lambda *a, **k: None
np.allclose = lambda *a, **k: True
_max = builtins.max
builtins.max = lambda *a, **k: _max(*a, **k)           # the same behaviour, another function
from diffusion_tutorial import checks
for _name in dir(checks):
    if _name.startswith("check_"):
        setattr(checks, _name, lambda *a, **k: None)
"""
DELEGATING_DDIM = """
def ddim_step(x_t, t, t_prev, eps, alphas_cumprod, eta, z):
    prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return dt.GaussianDiffusion(betas=(1 - alphas_cumprod / prev).double()).ddim_step(
        x_t, t, t_prev, eps, eta=eta, noise=z).to(x_t.dtype)
"""


@pytest.mark.slow
def test_cheats_score_zero_where_they_cheat_and_are_flagged(built, tmp_path, monkeypatch):
    """The real autograder, through assignments/grade.py, with its classroom plugin: the
    solutions get full marks, a blank hand-in none, and each cheat 0 on the questions it
    games (the answers are run again out of process), with a flag in the CSV."""
    from diffusion_tutorial.checks.questions import _reference_ddim_loop, experiment_x_T
    run_student(built, "forward_process", monkeypatch=monkeypatch)  # runs grader.export()
    exported = sorted((built / "forward_process" / "student").glob("forward_process_*.zip"))
    assert exported, "the export cell made no zip"
    monkeypatch.chdir(tmp_path)
    subs = {name: [make_submission(built, name, tmp_path, "alice")] for name in SOURCES}
    wrong_q_sample = WRONG[0][2]  # missing square root on ᾱ_t
    subs["forward_process"] += [
        make_submission(built, "forward_process", tmp_path, "mallory", {"q_sample": wrong_q_sample},
                        setup="import numpy as np\n" + PATCHES),
        make_submission(built, "forward_process", tmp_path, "trudy", {
            "q_sample": "from diffusion_tutorial.checks import _reference_q_sample as q_sample\n",
            "cosine_schedule": "def cosine_schedule(T, s=0.008):\n"
                               "    return dt.cosine_beta_schedule(T, s)\n"}),
        *exported]
    subs["reverse_process"].append(make_submission(built, "reverse_process", tmp_path, "oscar", {
        "posterior": "def posterior(x0, x_t, t, betas):\n"
                     "    mean, var = dt.GaussianDiffusion(betas=betas.double()).q_posterior(x0, x_t, t)\n"
                     "    return mean, var.to(x_t.dtype)\n",
        "mean_from_eps": "def mean_from_eps(x_t, t, eps, betas):\n    return x_t - eps\n",
        "ddpm_step": solution_code(built, "reverse_process", "ddpm_step").replace(
            "mean_from_eps(x_t, t, eps, betas)", "mean_own(x_t, t, eps, betas)") + "\n\n" +
        solution_code(built, "reverse_process", "mean_from_eps").replace("def mean_from_eps",
                                                                         "def mean_own")},
        setup="import numpy as np\n" + PATCHES))
    alice_x_T = experiment_x_T("alice")
    alice_std = {steps: float(_reference_ddim_loop(alice_x_T, steps).std()) for steps in (5, 10, 50)}
    subs["loss_and_sampling"] += [
        make_submission(built, "loss_and_sampling", tmp_path, "eve", {
            "ddim_step": DELEGATING_DDIM,
            "ddim_experiment": "def ddim_sample_loop(x_T, steps):\n"
                               "    return dt.ddim_sample(diffusion, eps_exact, x_T.shape, steps=steps,"
                               " x_T=x_T, progress=False)\n\n\n"
                               "sample_std = {s: ddim_sample_loop(x_T, s).std().item()\n"
                               "              for s in (5, 10, 50)}\n"}),
        make_submission(built, "loss_and_sampling", tmp_path, "frank", {
            "ddim_experiment": solution_code(built, "loss_and_sampling", "ddim_experiment").split(
                "\n\nsample_std")[0] + f"\n\nsample_std = {alice_std!r}  # a friend's numbers\n"})]

    def grade(name):
        out = tmp_path / f"{name}.csv"
        proc = subprocess.run([sys.executable, str(ROOT / "assignments" / "grade.py"), "-a",
                               str(built / name / "autograder.zip"), "-o", str(out), "-j", "2",
                               *map(str, subs[name])], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with open(out, newline="", encoding="utf-8") as f:
            return {row["student"]: row for row in csv.DictReader(f)}

    with ThreadPoolExecutor(3) as pool:
        tables = dict(zip(SOURCES, pool.map(grade, SOURCES)))

    def scores(name, student):
        return {q: float(tables[name][student][q]) for q in AUTOGRADED[name]}

    for name in SOURCES:  # the solutions: full marks, no flags
        alice = tables[name]["alice"]
        assert set(scores(name, "alice").values()) == {1.0} and alice["flags"] == "", (name, alice)
        assert float(alice["total"]) == float(alice["possible"]) == len(AUTOGRADED[name])
    blank = next(row for student, row in tables["forward_process"].items() if student.startswith("forward"))
    assert blank["submission"].endswith(".zip") and float(blank["total"]) == 0
    assert float(blank["possible"]) == 3

    assert scores("forward_process", "mallory") == {"scale_to_model_range": 1, "q_sample": 0,
                                                    "cosine_schedule": 1}
    flags = tables["forward_process"]["mallory"]["flags"]
    assert "rebinds torch.allclose;" in flags  # the audit of the source
    assert "rebinds torch.allclose (seen when the notebook ran)" in flags  # the run-time probe
    assert "rebinds diffusion_tutorial.checks.check_q_sample (seen when the notebook ran)" in flags
    assert "q_sample" in tables["forward_process"]["mallory"]["feedback"]

    assert scores("forward_process", "trudy") == {"scale_to_model_range": 1, "q_sample": 0,
                                                  "cosine_schedule": 0}
    flags = tables["forward_process"]["trudy"]["flags"]
    assert "_reference_q_sample (a reference solution)" in flags
    assert "cosine_schedule calls the package's schedules.cosine_beta_schedule (delegation)" in flags

    assert scores("reverse_process", "oscar") == {"posterior": 0, "mean_from_eps": 0, "ddpm_step": 1}
    flags = tables["reverse_process"]["oscar"]["flags"]
    assert "posterior calls the package's" in flags and "GaussianDiffusion.q_posterior" in flags
    assert "rebinds builtins.max (seen when the notebook ran)" in flags

    assert scores("loss_and_sampling", "eve") == {"loss": 1, "p_losses": 1, "ddim_step": 0,
                                                 "score_from_eps": 1, "ddim_experiment": 0}
    flags = tables["loss_and_sampling"]["eve"]["flags"]
    assert "ddim_sample_loop calls the package's samplers.ddim_sample" in flags
    assert scores("loss_and_sampling", "frank")["ddim_experiment"] == 0
    assert float(tables["loss_and_sampling"]["frank"]["total"]) == 4
    assert "hard-coded numbers" in tables["loss_and_sampling"]["frank"]["flags"]


# ---------------------------------------------------------------- Gradescope, in a fresh environment
def _local_cpu_torch() -> str:
    """A CPU build of torch that pip finds on this machine's disk (its find-links folders),
    pinned, so that the fresh environment need not fetch the CUDA build; else "torch>=2.1"."""
    folders = os.environ.get("PIP_FIND_LINKS", "").split()
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                          capture_output=True, text=True)
    folders += proc.stdout.split() if proc.returncode == 0 else []
    wheels = sorted(w for f in folders for w in Path(f.removeprefix("file://")).glob("torch-*+cpu-*.whl"))
    return f"torch=={wheels[-1].name.split('-')[1]}" if wheels else "torch>=2.1"


@pytest.mark.slow
def test_gradescope_zip_installs_and_grades_in_a_fresh_virtual_environment(tmp_path):
    """What Gradescope does with autograder.zip, without Docker: unpack it as
    /autograder/source, create a fresh environment, pip-install the zip's requirements
    (otter-grader, CPU torch, the package's wheel from inside the zip), then grade the
    solution with `otter run` there. Offline except for the package registry: the PyTorch
    CPU index is left out (--torch-index none) and a CPU wheel on this machine's disk is
    pinned when there is one. No PYTHONPATH: the package must come from the zip."""
    started = time.monotonic()
    name = "forward_process"
    proc = _bash("--out", str(tmp_path / "dist"), "--torch-index", "none", "--torch", _local_cpu_torch(),
                 name)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    source = tmp_path / "autograder" / "source"
    with zipfile.ZipFile(tmp_path / "dist" / name / "autograder.zip") as zf:
        zf.extractall(source)
    environment = yaml.safe_load((source / "environment.yml").read_text())
    requirements = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert any(r.startswith("otter-grader") for r in requirements)
    assert any(r.startswith("torch") for r in requirements)
    assert any(r.endswith(".whl") and "diffusion_tutorial" in r for r in requirements)
    (tmp_path / "requirements.txt").write_text(  # Gradescope's /autograder is tmp_path/autograder here
        "\n".join(r.replace("/autograder/source", str(source)) for r in requirements) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    python = str(venv / "bin" / "python")
    proc = subprocess.run([python, "-m", "pip", "install", "-q", "--retries", "1", "-r",
                           str(tmp_path / "requirements.txt")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    installed = time.monotonic()
    out = tmp_path / "results"
    out.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    built = tmp_path / "dist" / name
    proc = subprocess.run([python, "-m", "otter", "run", "-a", str(built / "autograder.zip"), "-o", str(out),
                           "--no-logo", str(built / "autograder" / f"{name}.ipynb")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    scores = {t["name"]: (t["score"], t["max_score"]) for t in results["tests"] if "score" in t}
    assert scores == {q: (1.0, 1.0) for q in AUTOGRADED[name]}, results
    assert "Run again outside the notebook" in results.get("output", "")  # the plugin ran there
    where = subprocess.run([python, "-c", "import diffusion_tutorial, torch; "
                            "print(diffusion_tutorial.__file__, torch.version.cuda)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    assert str(venv) in where and where.split()[-1] == "None", where  # the zip's package, CPU torch
    print(f"fresh environment: install {installed - started:.0f} s (with the build), "
          f"grading {time.monotonic() - installed:.0f} s")


# ---------------------------------------------------------------- in-process runs
def _answer_cell(nb, question):
    marker = "sample_std =" if question == "ddim_experiment" else f"def {question}("
    tags = {"otter_answer_cell", "otter_assign_solution_cell"}  # student / autograder edition
    cells = [c for c in nb.cells if tags & set(c.metadata.get("tags", []))
             and c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"no single answer cell for {question}"
    return cells[0]


def run_student(built, name, answers=None, monkeypatch=None):
    """Execute the student edition in-process, with some answer cells replaced.
    Returns (namespace, printed output). Any exception in any cell fails the test."""
    path = built / name / "student" / f"{name}.ipynb"
    nb = nbformat.read(path, 4)
    for question, code in (answers or {}).items():
        _answer_cell(nb, question).source = code
    ns = {"__name__": "__main__"}
    out = io.StringIO()
    monkeypatch.chdir(path.parent)
    with contextlib.redirect_stdout(out):
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                exec(compile(cell.source, f"{name}.ipynb cell {i}", "exec"), ns)
    return ns, out.getvalue()


def grade_all(built, name, ns):
    """Run the public and hidden tests of every question against a namespace."""
    nb = nbformat.read(built / name / "autograder" / f"{name}.ipynb", 4)
    results = {}
    for question, source in nb.metadata["otter"]["tests"].items():
        test_file = ExceptionTestFile.from_string(source, path=question)
        with contextlib.redirect_stdout(io.StringIO()):
            test_file.run(ns)
        results[question] = test_file
    return results


def public_messages(ns, question):
    """The messages of the visible tests, as `grader.check(question)` shows them."""
    with contextlib.redirect_stdout(io.StringIO()):
        result = ns["grader"].check(question, global_env=ns)
    return [r.message for r in result.test_case_results if not r.passed]


def solution_code(built, name, question):
    nb = nbformat.read(built / name / "autograder" / f"{name}.ipynb", 4)
    return _answer_cell(nb, question).source


@pytest.mark.parametrize("name", SOURCES)
def test_blank_student_edition_runs_and_fails_every_check(built, name, monkeypatch):
    ns, _ = run_student(built, name, monkeypatch=monkeypatch)
    assert "grader" in ns
    results = grade_all(built, name, ns)
    assert sorted(results) == sorted(AUTOGRADED[name])
    for question, test_file in results.items():
        assert test_file.score == 0, question
    # what students see under each question says what to do
    for question in AUTOGRADED[name]:
        shown = public_messages(ns, question)
        expected = ("must be a dict" if question == "ddim_experiment"
                    else "replace the ... placeholder")
        assert shown and all(expected in m for m in shown), (question, shown)


@pytest.mark.parametrize("name", SOURCES)
def test_student_edition_with_the_solutions_gets_full_marks(built, name, monkeypatch):
    answers = {q: solution_code(built, name, q) for q in AUTOGRADED[name]}
    ns, printed = run_student(built, name, answers, monkeypatch)
    results = grade_all(built, name, ns)
    for question, test_file in results.items():
        hidden = [r for r in test_file.test_case_results if r.test_case.hidden]
        assert hidden, f"{question} has no hidden test"
        assert test_file.passed_all, (question, [r.message for r in test_file.test_case_results])
        assert test_file.score == test_file.possible == 1
    assert "✓" in printed and "✗" not in printed


WRONG = [
    ("forward_process", "q_sample", """
def q_sample(x0, t, noise, alphas_cumprod):
    abar_t = alphas_cumprod[t].view(-1, *[1] * (x0.ndim - 1))
    return abar_t * x0 + (1 - abar_t).sqrt() * noise
""", "missing square root on ᾱ_t"),
    ("forward_process", "q_sample", """
def q_sample(x0, t, noise, alphas_cumprod):
    abar_t = alphas_cumprod[t - 1].view(-1, *[1] * (x0.ndim - 1))
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * noise
""", "off by one in t"),
    ("forward_process", "q_sample", """
def q_sample(x0, t, noise, alphas_cumprod):
    return alphas_cumprod[t].sqrt() * x0 + (1 - alphas_cumprod[t]).sqrt() * noise
""", "shape error"),
    ("forward_process", "scale_to_model_range", """
def scale_to_model_range(x):
    return x.clone()
""", "still in [0, 1]"),
    ("reverse_process", "posterior", """
def posterior(x0, x_t, t, betas):
    alphas = 1 - betas
    abar = torch.cumprod(alphas, dim=0)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    b, a, ab, abp = (v[t].view(shape) for v in (betas, alphas, abar, abar_prev))
    mean = abp.sqrt() * b / (1 - ab) * x0 + a.sqrt() * (1 - abp) / (1 - ab) * x_t
    return mean, b
""", "the variance is β_t"),
    ("reverse_process", "ddpm_step", """
def ddpm_step(x_t, t, eps, betas, z):
    sigma = betas[t].sqrt().view((-1,) + (1,) * (x_t.ndim - 1))
    return mean_from_eps(x_t, t, eps, betas) + sigma * z
""", "noise added at the first step"),
    ("loss_and_sampling", "ddim_step", """
def ddim_step(x_t, t, t_prev, eps, alphas_cumprod, eta, z):
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    abar_t = alphas_cumprod[t].view(shape)
    abar_prev = torch.where(t_prev >= 0, alphas_cumprod[t_prev.clamp(min=0)], 1.0).view(shape)
    x0_hat = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    return abar_prev.sqrt() * x0_hat + (1 - abar_prev).sqrt() * eps
""", "η is ignored"),
]


@pytest.mark.parametrize("name, question, code, message", WRONG,
                         ids=[f"{w[1]}:{w[3]}" for w in WRONG])
def test_wrong_answers_are_caught_with_the_right_message(built, name, question, code, message,
                                                         monkeypatch):
    answers = {q: solution_code(built, name, q) for q in AUTOGRADED[name]}
    answers[question] = code
    ns, _ = run_student(built, name, answers, monkeypatch)
    results = grade_all(built, name, ns)
    wrong = results[question]
    assert wrong.score == 0
    public = [r for r in wrong.test_case_results if not r.test_case.hidden]
    assert public and all(message in r.message for r in public), [r.message for r in public]
    shown = public_messages(ns, question)
    assert shown and all(message in m for m in shown), shown
    # the other questions are unaffected (except those that build on this answer)
    for other, test_file in results.items():
        if other != question and not (question == "ddim_step" and other == "ddim_experiment"):
            assert test_file.passed_all, other


def test_export_private_keeps_the_sources_with_a_fresh_secret(tmp_path):
    dest = tmp_path / "private"
    proc = _bash("--export-private", str(dest))
    assert proc.returncode == 0, proc.stderr
    secrets = set()
    for name in SOURCES:
        text = (dest / "assignments" / "source" / f"{name}.ipynb").read_text(encoding="utf-8")
        assert "# BEGIN SOLUTION" in text
        secret = text.split('secret: \\"', 1)[1].split('\\"', 1)[0]
        assert len(secret) == 32
        secrets.add(secret)
    assert len(secrets) == len(SOURCES)  # one per assignment, none left empty
    assert (dest / "assignments" / "grade.py").exists()
    assert (dest / "scripts" / "build_assignments.sh").exists()
    assert _bash("--export-private", str(dest)).returncode != 0  # never overwrites


@pytest.mark.slow
def test_export_public_ships_student_editions_only(tmp_path):
    dest = tmp_path / "public"
    proc = _bash("--export-public", str(dest))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (dest / "assignments" / "source").exists()
    students = sorted(p.stem for p in (dest / "assignments" / "student").glob("*.ipynb"))
    assert students == SOURCES
    for name in SOURCES:
        text = (dest / "assignments" / "student" / f"{name}.ipynb").read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "_hidden(" not in text
    assert (dest / "diffusion_tutorial" / "checks" / "__init__.py").exists()


def test_build_script_refuses_unknown_assignment(tmp_path):
    proc = _bash("--out", str(tmp_path), "no_such_assignment")
    assert proc.returncode != 0 and "no such assignment" in proc.stderr


# ---------------------------------------------------------------- the book without solutions
def _bash(*args, **kw):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", str(ROOT / "scripts" / "build_assignments.sh"), *args],
                          capture_output=True, text=True, env=env, **kw)


def test_book_config_for_students_only_adds_hide_solutions(tmp_path):
    yaml = pytest.importorskip("yaml")
    if not (ROOT / "_config.yml").exists():
        pytest.skip("no _config.yml")
    proc = _bash("--book-config", str(tmp_path / "_config.student.yml"))
    assert proc.returncode == 0, proc.stderr
    original = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    student = yaml.safe_load((tmp_path / "_config.student.yml").read_text(encoding="utf-8"))
    assert student["sphinx"]["config"].pop("hide_solutions") is True
    assert student == original


@pytest.mark.slow
def test_hide_solutions_removes_solutions_from_a_built_page(tmp_path):
    pytest.importorskip("sphinx_exercise")
    if shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("jupyter-book is not installed")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    (tmp_path / "page.md").write_text(
        "# Page\n\n```{exercise}\n:label: page_ex1\nEXERCISE-TEXT\n```\n\n"
        "````{solution} page_ex1\n:class: dropdown\nSOLUTION-TEXT\n```python\nprint(1)\n```\n````\n")
    pages = {}
    for hide in (False, True):
        (tmp_path / "_config.yml").write_text(
            "title: t\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: 'off'\n"
            "sphinx:\n  extra_extensions: [sphinx_exercise]\n"
            f"  config:\n    hide_solutions: {str(hide).lower()}\n")
        out = tmp_path / f"out_{hide}"
        proc = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build",
                               str(tmp_path), "--path-output", str(out), "-W", "-n"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:]
        pages[hide] = (out / "_build" / "html" / "page.html").read_text(encoding="utf-8")
    assert "EXERCISE-TEXT" in pages[False] and "SOLUTION-TEXT" in pages[False]
    assert "EXERCISE-TEXT" in pages[True] and "SOLUTION-TEXT" not in pages[True]
