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

The student's identifier comes from ``$DIFFUSION_TUTORIAL_STUDENT_ID`` (grade.py sets it),
else the notebook (:func:`~diffusion_tutorial.checks.classroom.student_id`), else Gradescope's
submission metadata, else the file name. Chapter: For instructors.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from otter.plugins import AbstractOtterPlugin
from otter.test_files.abstract_test import TestCase, TestCaseResult

from .classroom import student_id
from .verify import Verification, verify_notebook

STUDENT_ID_ENV = "DIFFUSION_TUTORIAL_STUDENT_ID"
PLUGIN_NAME = "diffusion_tutorial.checks.otter_plugin.ClassroomPlugin"


class ClassroomPlugin(AbstractOtterPlugin):
    """Re-grades the autograded questions out of process; see the module docstring."""

    verification: Verification = None

    def _student_id(self, nb) -> str:
        if os.environ.get(STUDENT_ID_ENV):
            return os.environ[STUDENT_ID_ENV]
        users = (self.submission_metadata or {}).get("users") or [{}]
        fallback = str(users[0].get("sid") or users[0].get("email") or Path(self.submission_path).stem)
        return student_id(nb, fallback)[0]

    def after_grading(self, results) -> None:
        config = self.plugin_config or {}
        path = Path(self.submission_path)
        nb = json.loads(path.read_text(encoding="utf-8"))
        sid = self._student_id(nb)
        self.verification = verify_notebook(
            nb, config["assignment"], sid, secret=str(config.get("secret", "")),
            notebook_dir=str(path.parent), timeout=int(config.get("timeout", 600)))
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

    def generate_report(self) -> str:
        return self.verification.report() if self.verification else ""
