"""The classroom side of the checks: who handed a notebook in, their own random inputs, and
what in the notebook's source needs an instructor's look.

* :func:`student_seed` turns a student's identifier into a seed, so that every student gets
  different inputs (and the numbers of one student don't pass for another).
* :func:`student_id_literal` and :func:`student_id` read the identifier from a submission:
  the ``STUDENT_ID = "..."`` line the student fills in, else the notebook metadata field
  ``diffusion_tutorial.student_id`` (which a learning platform can stamp), else a fallback
  such as the file name. A notebook that is not a notebook gives the fallback, not an error.
* :func:`audit_notebook` and :func:`audit_findings` read the source, without running it
  (:mod:`.audit`): what an honest solution does not contain, and :func:`tampering`, the part of
  it that reaches into the Python process or the grader's files.

The run-time side (running the answers again in a fresh process) is
:mod:`diffusion_tutorial.checks.verify`. Chapter: For instructors.
"""
from __future__ import annotations

import ast
import hashlib
from typing import Iterable

from .audit import Finding, audit_source
from .cells import code_cells, parse

STUDENT_ID_VARIABLE = "STUDENT_ID"
METADATA_KEY = "diffusion_tutorial"

def student_seed(student_id: str, purpose: str) -> int:
    """A seed in [0, 2³²) drawn from a student's identifier and a purpose (an assignment or a
    question), the same on every machine: ``sha256(purpose NUL student_id)``."""
    digest = hashlib.sha256(f"{purpose}\0{student_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


# ============================================================ reading a notebook
def _student_id_values(nb) -> list:
    """The expressions assigned to ``STUDENT_ID`` at the top level, in order."""
    values = []
    for _, source in code_cells(nb):
        tree = parse(source)
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
    metadata = nb.get("metadata") if isinstance(nb, dict) else None
    stamped = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    stamped = str(stamped.get("student_id") or "").strip() if isinstance(stamped, dict) else ""
    if stamped:
        return stamped, "notebook metadata"
    return fallback, "file name"


# ============================================================ the audit
def audit_findings(nb, graded: Iterable[str] = ()) -> list[Finding]:
    """Every :class:`~.audit.Finding` of the notebook's source; ``graded`` names the answer
    functions, where calls of the package's own answers count as delegation."""
    findings = audit_source(nb, graded)
    if any(not (isinstance(v, ast.Constant) and isinstance(v.value, str)) for v in _student_id_values(nb)):
        findings.append(Finding(f"{STUDENT_ID_VARIABLE} is not a plain string"))
    return findings


def audit_notebook(nb, graded: Iterable[str] = ()) -> list[str]:
    """What in the notebook's source needs an instructor's look, one line each (empty for an
    honest solution)."""
    return [f.text for f in audit_findings(nb, graded)]


def tampering(findings: Iterable[Finding]) -> list[str]:
    """The findings that reach into the Python process or the grader's files."""
    return [f.text for f in findings if f.tamper]
