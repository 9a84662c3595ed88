"""assignments/grade.py without Otter: how it retries a kernel that failed to start, how it
reports a submission that fails for other reasons, and what its CSV, feedback files and rubric
hold. `otter run` is replaced by a fake."""
import csv
import importlib.util
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("grade", ROOT / "assignments" / "grade.py")
grade = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grade)

RESULTS = '{"tests": [{"name": "q_sample", "score": 1.0, "max_score": 1.0, "output": "ok"}]}'
GRADED = {"scores": {"q_sample": (1.0, 1.0)}, "feedback": {"q_sample": "ok"}, "report": ""}


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    """Retries wait a random 0.5-3 s; the tests need not."""
    monkeypatch.setattr(grade.time, "sleep", lambda seconds: None)


def fake_otter(outcomes):
    """A stand-in for subprocess.run that plays `outcomes` in order: "ok" writes a
    results.json with full marks, a dict is written as results.json, any other string is
    printed to stderr with exit 1. Each call's environment is kept in `calls.env`."""
    calls = []
    calls_env = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        calls_env.append(kwargs.get("env") or {})
        outcome = outcomes[len(calls) - 1]
        if outcome == "ok" or isinstance(outcome, dict):
            out = Path(cmd[cmd.index("-o") + 1])
            (out / "results.json").write_text(RESULTS if outcome == "ok" else json.dumps(outcome))
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 1, "", f"Traceback ...\n{outcome}\n")
    run.env = calls_env
    return run, calls


@pytest.mark.parametrize("error", grade.KERNEL_START_ERRORS)
def test_a_kernel_that_failed_to_start_is_retried(monkeypatch, tmp_path, error):
    # the kernel's error need not be the last line otter prints
    run, calls = fake_otter([f"RuntimeError: {error}\nwhile executing the notebook", "ok"])
    monkeypatch.setattr(grade.subprocess, "run", run)
    assert grade.grade_one(tmp_path / "s.ipynb", tmp_path / "a.zip", 60) == GRADED
    assert len(calls) == 2


def test_retries_stop_after_the_last_attempt(monkeypatch, tmp_path):
    error = f"RuntimeError: {grade.KERNEL_START_ERRORS[0]}"
    run, calls = fake_otter([error] * grade.KERNEL_START_ATTEMPTS)
    monkeypatch.setattr(grade.subprocess, "run", run)
    assert grade.grade_one(tmp_path / "s.ipynb", tmp_path / "a.zip", 60) == {"error": error}
    assert len(calls) == grade.KERNEL_START_ATTEMPTS


def test_a_broken_submission_is_not_retried(monkeypatch, tmp_path):
    run, calls = fake_otter(["NameError: name 'q_sample' is not defined", "ok"])
    monkeypatch.setattr(grade.subprocess, "run", run)
    result = grade.grade_one(tmp_path / "s.ipynb", tmp_path / "a.zip", 60)
    assert result == {"error": "NameError: name 'q_sample' is not defined"}
    assert len(calls) == 1


def autograder_zip(path: Path) -> Path:
    """A minimal autograder zip: two tests and the classroom plugin with a written question."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tests/q_sample.py", 'name = "q_sample"\npoints = 1\n')
        zf.writestr("tests/posterior.py", 'name = "posterior"\npoints = 2\n')
        zf.writestr("otter_config.json", json.dumps({"plugins": [{grade.PLUGIN: {
            "assignment": "forward_process",
            "written": {"sqrt_question": {"points": 1, "rubric": ["0.5: Var(x_t) = 1", "0.5: x_T"]}}}}]}))
    return path


def notebook(path: Path, student_id=None, metadata_id=None, code="") -> Path:
    cells = [{"cell_type": "code", "metadata": {}, "outputs": [], "source":
              (f"STUDENT_ID = {student_id!r}\n" if student_id is not None else "") + code}]
    meta = {"diffusion_tutorial": {"student_id": metadata_id}} if metadata_id else {}
    path.write_text(json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))
    return path


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_main_writes_the_error_into_the_csv_and_exits_1(monkeypatch, tmp_path):
    full = {"tests": [{"name": "q_sample", "score": 1.0, "max_score": 1.0, "output": "✅"},
                      {"name": "posterior", "score": 2.0, "max_score": 2.0, "output": "✅"}]}
    run, _ = fake_otter([full, "SyntaxError: invalid syntax"])
    monkeypatch.setattr(grade.subprocess, "run", run)
    subs = [notebook(tmp_path / "a.ipynb", "s1"), notebook(tmp_path / "b.ipynb", "s2")]
    out = tmp_path / "grades.csv"
    code = grade.main([*map(str, subs), "-a", str(autograder_zip(tmp_path / "ag.zip")), "-o", str(out),
                       "-j", "1"])
    assert code == 1
    header = out.read_text(encoding="utf-8").splitlines()[0]
    assert header == ("student,submission,posterior,q_sample,total,possible,"
                      "sqrt_question (by hand: max 1),flags,feedback,error")
    ok, broken = read_csv(out)
    assert (ok["student"], ok["total"], ok["possible"], ok["error"]) == ("s1", "3.0", "3.0", "")
    assert ok["feedback"] == "all autograded questions passed"
    # a submission that failed to run is still out of the full score, not 0
    assert (broken["student"], broken["total"], broken["possible"]) == ("s2", "0", "3.0")
    assert broken["error"] == "SyntaxError: invalid syntax"
    assert "could not be graded" in (tmp_path / "grades_feedback" / "s2.txt").read_text()


def test_rows_are_keyed_by_the_student_id_feedback_and_flags(monkeypatch, tmp_path):
    failed = {"tests": [
        {"name": "q_sample", "score": 0.0, "max_score": 1.0, "output":
         "q_sample results:\n  ❌ Test case failed\n  AssertionError: check_q_sample: 0/7 parts passed\n"
         "    ✗ random t: missing square root on ᾱ_t\n"},
        {"name": "posterior", "score": 2.0, "max_score": 2.0, "output": "✅"}],
        "output": "Run again:\nFLAG: rebinds torch.allclose (seen when the notebook ran)"}
    run, _ = fake_otter([failed, "ok", "ok"])
    monkeypatch.setattr(grade.subprocess, "run", run)
    subs = [notebook(tmp_path / "alice.ipynb", "s1", code="\ntorch.allclose = lambda *a, **k: True"),
            notebook(tmp_path / "bob.ipynb", "", metadata_id="s2"),
            notebook(tmp_path / "carol.ipynb", "s1")]
    out = tmp_path / "grades.csv"
    grade.main([*map(str, subs), "-a", str(autograder_zip(tmp_path / "ag.zip")), "-o", str(out), "-j", "1"])
    rows = read_csv(out)
    assert [r["student"] for r in rows] == ["s1", "s2", "s1"]  # cell, metadata, cell
    assert run.env[0][grade.STUDENT_ID_ENV] == "s1" and run.env[1][grade.STUDENT_ID_ENV] == "s2"
    assert rows[0]["feedback"] == "q_sample: random t: missing square root on ᾱ_t"
    flags = rows[0]["flags"]
    assert "rebinds torch.allclose" in flags  # from the source (static) and the plugin (run time)
    assert "seen when the notebook ran" in flags
    assert "the same student identifier as carol.ipynb" in flags
    assert "missing square root" in (tmp_path / "grades_feedback" / "s1__alice.txt").read_text()
    rubric = (tmp_path / "grades_rubric.md").read_text()
    assert "## sqrt_question (1 point(s))" in rubric and "- 0.5: Var(x_t) = 1" in rubric


def test_the_file_name_is_the_fallback_identifier(tmp_path):
    sub = notebook(tmp_path / "dave_hw1.ipynb")
    assert grade.identify(sub, grade.read_notebook(sub)) == ("dave_hw1", "file name")
    zipped = tmp_path / "erin.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.write(notebook(tmp_path / "inner.ipynb", "s5"), "forward_process.ipynb")
    assert grade.identify(zipped, grade.read_notebook(zipped)) == ("s5", "STUDENT_ID cell")
