"""assignments/grade.py without Otter: how it retries a kernel that failed to start and how
it reports a submission that fails for other reasons. `otter run` is replaced by a fake."""
import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("grade", ROOT / "assignments" / "grade.py")
grade = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grade)

RESULTS = '{"tests": [{"name": "q_sample", "score": 1.0, "max_score": 1.0}]}'


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    """Retries wait a random 0.5-3 s; the tests need not."""
    monkeypatch.setattr(grade.time, "sleep", lambda seconds: None)


def fake_otter(outcomes):
    """A stand-in for subprocess.run that plays `outcomes` in order: "ok" writes a
    results.json with full marks, any other string is printed to stderr with exit 1."""
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        outcome = outcomes[len(calls) - 1]
        if outcome == "ok":
            out = Path(cmd[cmd.index("-o") + 1])
            (out / "results.json").write_text(RESULTS)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 1, "", f"Traceback ...\n{outcome}\n")
    return run, calls


@pytest.mark.parametrize("error", grade.KERNEL_START_ERRORS)
def test_a_kernel_that_failed_to_start_is_retried(monkeypatch, tmp_path, error):
    # the kernel's error need not be the last line otter prints
    run, calls = fake_otter([f"RuntimeError: {error}\nwhile executing the notebook", "ok"])
    monkeypatch.setattr(grade.subprocess, "run", run)
    assert grade.grade_one(tmp_path / "s.ipynb", tmp_path / "a.zip", 60) == {
        "scores": {"q_sample": (1.0, 1.0)}}
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


def test_main_writes_the_error_into_the_csv_and_exits_1(monkeypatch, tmp_path):
    run, _ = fake_otter(["ok", "SyntaxError: invalid syntax"])
    monkeypatch.setattr(grade.subprocess, "run", run)
    subs = [tmp_path / "a.ipynb", tmp_path / "b.ipynb"]
    for s in subs:
        s.write_text("{}")
    (tmp_path / "ag.zip").write_bytes(b"")
    out = tmp_path / "grades.csv"
    code = grade.main([*map(str, subs), "-a", str(tmp_path / "ag.zip"), "-o", str(out), "-j", "1"])
    assert code == 1
    rows = out.read_text().splitlines()
    assert rows[0] == "submission,q_sample,total,possible,error"
    assert rows[1] == "a.ipynb,1.0,1.0,1.0,"
    assert rows[2] == "b.ipynb,,0,0,SyntaxError: invalid syntax"
