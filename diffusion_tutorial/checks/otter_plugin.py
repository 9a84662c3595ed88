"""An Otter plugin that grades every autograded question again outside the student's kernel.

Otter runs a submission's tests in the student's own kernel, where one line such as
``torch.allclose = lambda *a, **k: True`` could make every comparison pass. After Otter has
graded (its ``after_grading`` event, in Otter's process, which no notebook code reaches) this
plugin runs :func:`~diffusion_tutorial.checks.verify.verify_notebook`: a question that fails
there scores 0, its test gets the reason as one more line of feedback, and the report lists
what an instructor should look at. It runs the same way under ``otter run`` (and so
``assignments/grade.py``) and on Gradescope. Enable it in an assignment's config::

    plugins:
      - diffusion_tutorial.checks.otter_plugin.ClassroomPlugin:
          assignment: forward_process       # which questions (checks/questions.py)
          secret: "..."                     # the course's; seeds the hidden inputs
          written: {sqrt_question: {points: 1, rubric: [...]}}   # read by grade.py

Before anything runs (``before_grading``) the plugin makes Otter's own process read what the
kernel writes back without running code there (:mod:`.otter_hardening`) and notes the points
of every test; it keeps the notebook as handed in (``before_execution``), since the kernel
can rewrite the file. After grading it drops tests that the autograder does not have and
sets to 0 a test whose points changed while the notebook ran. Any error of its own sets every
question to 0 with a flag, rather than letting the kernel's scores stand.

The student's identifier comes from ``$DIFFUSION_TUTORIAL_STUDENT_ID`` (grade.py sets it), else
Gradescope's submission metadata (the platform's account, flagged when the notebook's
``STUDENT_ID`` differs), else the notebook
(:func:`~diffusion_tutorial.checks.classroom.student_id`), else the file name.
Chapter: For instructors.
"""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

from otter.plugins import AbstractOtterPlugin
from otter.test_files.abstract_test import TestCase, TestCaseResult

from .classroom import student_id, student_id_literal
from .environment import changed_files, fingerprint, python_roots
from .otter_hardening import harden_otter
from .questions import ASSIGNMENTS
from .verify import Verdict, Verification, verify_notebook

STUDENT_ID_ENV = "DIFFUSION_TUTORIAL_STUDENT_ID"
PLUGIN_NAME = "diffusion_tutorial.checks.otter_plugin.ClassroomPlugin"
# what a submission folder holds besides the notebook: Otter's own files and the tests it copies
OTTER_FILES = {"__init__.py", "tests", ".OTTER_LOG", "__zip_filename__", "__pycache__"}


class EnvironmentChanged(RuntimeError):
    """The notebook changed Python files of the grading environment."""


def brought_files(notebook: str) -> list[str]:
    """Files in the submission's folder that neither Otter nor the autograder put there (a zip
    can carry them; in the kernel's working folder they would stand in for modules)."""
    folder = Path(notebook).parent
    ours = {p.name for p in (folder.parent / "source" / "files").glob("*")}
    return sorted(p.name for p in folder.iterdir() if p.name not in OTTER_FILES | ours | {Path(notebook).name}
                  and p.suffix not in {".otter", ".pdf"})


def test_points(folder) -> dict[str, float]:
    """{test name: points} of the exception-style test files in ``folder`` (Otter's tests/)."""
    points = {}
    for path in sorted(Path(folder).glob("*.py")):
        values = {}
        try:
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    try:
                        values[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
        except (OSError, SyntaxError, ValueError):
            continue
        points[str(values.get("name", path.stem))] = float(values.get("points") or 1)
    return points


class ClassroomPlugin(AbstractOtterPlugin):
    """Re-grades the autograded questions out of process; see the module docstring."""

    verification: Verification = None
    notebook = None  # as handed in, kept before the kernel runs
    points: dict = None  # {test: points} before the kernel runs
    unhardened: list = ()

    brought: list = ()
    environment: dict = None  # the fingerprint of the Python files before the notebook runs

    def _python_files(self) -> dict:
        return fingerprint(python_roots(exclude=[str(Path(self.submission_path).parent.parent)]))

    def _check_environment(self) -> None:
        changed = changed_files(self.environment, self._python_files()) if self.environment else []
        if changed:
            raise EnvironmentChanged("the notebook changed Python files that the grader runs: "
                                     + ", ".join(changed[:3]))

    def before_grading(self, config) -> None:
        self.unhardened = harden_otter()
        self.points = test_points("tests")
        self.brought = brought_files(self.submission_path)
        self.environment = self._python_files()

    def before_execution(self, submission):
        self.unhardened = self.unhardened or harden_otter()
        if isinstance(submission, dict):
            self.notebook = json.loads(json.dumps(submission))
        return submission

    def _student_id(self, nb) -> tuple[str, list[str]]:
        """(identifier, flags about it)."""
        if os.environ.get(STUDENT_ID_ENV):
            return os.environ[STUDENT_ID_ENV], []
        users = (self.submission_metadata or {}).get("users") or [{}]
        account = str(users[0].get("sid") or users[0].get("email") or "")
        if account:
            literal = student_id_literal(nb)
            return account, ([f"STUDENT_ID {literal!r} is not the account that submitted it ({account})"]
                             if literal and literal != account else [])
        return student_id(nb, Path(self.submission_path).stem)[0], []

    def after_grading(self, results) -> None:
        config = self.plugin_config or {}
        sid, flags = "", []
        try:
            nb = self.notebook
            if nb is None:
                nb = json.loads(Path(self.submission_path).read_text(encoding="utf-8"))
            sid, flags = self._student_id(nb)
            self._check_environment()  # what the kernel wrote would run in the grader's fresh process
            self.verification = verify_notebook(
                nb, config["assignment"], sid, secret=str(config.get("secret", "")),
                notebook_dir=str(Path(self.submission_path).parent), timeout=int(config.get("timeout", 600)))
            self._check_environment()  # what the fresh process wrote would run in later ones
        except Exception as e:  # noqa: BLE001 - never let the kernel's scores stand unverified
            reason = (f"not graded automatically: {e}" if isinstance(e, EnvironmentChanged)
                      else f"the classroom plugin failed ({type(e).__name__}: {e})")
            names = [q.name for q in ASSIGNMENTS.get(config.get("assignment"), [])] or list(results.results)
            self.verification = Verification(questions={n: Verdict(False, reason) for n in names},
                                             flags=[reason], error=reason)
        self.verification.flags[:0] = flags + [f"could not make Otter's {m} safe" for m in self.unhardened]
        if self.brought:
            text = f"the submission brings files of its own ({', '.join(self.brought[:5])})"
            self.verification.flags.append(text)
            self.verification.questions = {n: Verdict(False, f"not graded automatically: {text}")
                                           for n in self.verification.questions}
        if getattr(results, "catastrophic_error", None) is not None:
            self.verification.flags.append(
                f"Otter could not read the kernel's results: {results.catastrophic_error}")
        self._keep_known_tests(results)
        for name, verdict in self.verification.questions.items():
            if name not in results.results:
                continue
            test_file = results.get_result(name)
            case = TestCase(name=f"{name}, run again outside the notebook", body=None, hidden=True,
                            points=0, success_message=None, failure_message=None)
            test_file.test_case_results.append(TestCaseResult(
                test_case=case, passed=verdict.passed,
                message="✅ passed" if verdict.passed else f"❌ {verdict.message}"))
            if not verdict.passed:
                results.update_score(name, 0)
        results.set_output(self.verification.report())
        results.set_plugin_data(PLUGIN_NAME, {
            "student_id": sid, "flags": list(self.verification.flags),
            "failed": {n: v.message for n, v in self.verification.questions.items() if not v.passed}})

    def _keep_known_tests(self, results) -> None:
        """Drop the tests the autograder does not have; 0 for one whose points changed."""
        if not self.points:
            return
        for name in list(results.results):
            if name not in self.points:
                del results.results[name]
                self.verification.flags.append(
                    f"the kernel reported a test {name!r} the autograder does not have")
                continue
            test_file = results.get_result(name)
            points = self.points[name]
            if abs(float(test_file.possible) - points) > 1e-9 or test_file.score > points:
                results.update_score(name, 0)
                self.verification.flags.append(f"the points of {name} changed while the notebook ran")

    def generate_report(self) -> str:
        return self.verification.report() if self.verification else ""
