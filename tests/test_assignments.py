"""The assignments build, their solutions earn full marks, and their checks catch mistakes.

Builds every assignment with Otter Assign into a temporary folder, grades the solution
notebooks with the real autograder (`otter run`, in parallel), and runs the student editions
in-process: blank, with a correct answer filled in, and with typical wrong answers, asserting
that the public and hidden tests fail with the message that names the mistake.
"""
import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

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


@pytest.mark.slow
def test_otter_run_gives_solutions_full_marks_and_a_blank_hand_in_none(built, tmp_path,
                                                                      monkeypatch):
    """The real autograder, through assignments/grade.py: every solution notebook gets full
    marks; the zip that a blank student edition's export cell makes gets zero."""
    run_student(built, "forward_process", monkeypatch=monkeypatch)  # runs grader.export()
    exported = sorted((built / "forward_process" / "student").glob("forward_process_*.zip"))
    assert exported, "the export cell made no zip"
    monkeypatch.chdir(tmp_path)

    def grade(name):
        subs = [built / name / "autograder" / f"{name}.ipynb"]
        subs += exported if name == "forward_process" else []
        out = tmp_path / f"{name}.csv"
        proc = subprocess.run([sys.executable, str(ROOT / "assignments" / "grade.py"), "-a",
                               str(built / name / "autograder.zip"), "-o", str(out), "-j", "2",
                               *map(str, subs)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with open(out, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    with ThreadPoolExecutor(3) as pool:
        tables = dict(zip(SOURCES, pool.map(grade, SOURCES)))
    for name, rows in tables.items():
        solution = rows[0]
        assert [float(solution[q]) for q in AUTOGRADED[name]] == [1.0] * len(AUTOGRADED[name])
        assert float(solution["total"]) == float(solution["possible"]) == len(AUTOGRADED[name])
    blank = tables["forward_process"][1]
    assert blank["submission"].endswith(".zip") and float(blank["total"]) == 0


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
