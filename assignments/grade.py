"""Grade a folder of submissions with an Otter autograder, without Docker, into one CSV.

    python assignments/grade.py --autograder assignments/dist/forward_process/autograder.zip \\
        submissions/forward_process/ --out grades_forward_process.csv

Each submission (a notebook, or the zip that ``grader.export()`` makes) is graded with
``otter run``, which executes it in the current Python environment (so the packages the
notebook imports, ``diffusion_tutorial`` included, must be installed here) and runs every
public and hidden test; the assignment's classroom plugin then runs every answer again in a
fresh process, where nothing the notebook rebinds reaches the comparison, and sets a question
that fails there to 0 (``diffusion_tutorial.checks.otter_plugin``).

The CSV has one row per submission, keyed by the student's identifier (the notebook's
``STUDENT_ID``, else its ``diffusion_tutorial.student_id`` metadata, else the file name):
the score of each autograded question, the total and the maximum (also for a submission that
failed to run), an empty column per written question for its manual score, the flags that
need an instructor's look (rebound functions, reference solutions imported, delegation to the
package, hard-coded numbers, a shared identifier), a short feedback summary and any error.
Beside it: one feedback file per student (Otter's message for every test) and the rubric of
the written questions.
"""
from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

PLUGIN = "diffusion_tutorial.checks.otter_plugin.ClassroomPlugin"
STUDENT_ID_ENV = "DIFFUSION_TUTORIAL_STUDENT_ID"


def find_submissions(paths: list[str]) -> list[Path]:
    """Notebooks and zips among ``paths``; folders are searched one level deep."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix in {".ipynb", ".zip"})
        elif p.suffix in {".ipynb", ".zip"} and p.exists():
            found.append(p)
        else:
            raise SystemExit(f"not a notebook, zip or folder: {p}")
    if not found:
        raise SystemExit("no submissions (.ipynb or .zip) found")
    return found


# Failures of the grading machine, not of the submission: a Jupyter kernel that dies or
# hangs while starting (e.g. two kernels started at once picked the same port). Such a
# submission is graded again, up to ``KERNEL_START_ATTEMPTS`` times in all.
KERNEL_START_ERRORS = ("Kernel died before replying to kernel_info", "Kernel didn't respond")
KERNEL_START_ATTEMPTS = 3


def grade_one(submission: Path, autograder: Path, timeout: int, student_id: str = "") -> dict:
    """Run ``otter run`` on one submission; return {"scores": {question: (score, max)},
    "feedback": {question: Otter's output}, "report": the plugin's report} or {"error": ...}.
    A kernel that fails to start is retried (see ``KERNEL_START_ERRORS``)."""
    for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
        graded = _otter_run(submission, autograder, timeout, student_id)
        output = graded.pop("output", "")
        if not any(e in output for e in KERNEL_START_ERRORS):
            return graded
        print(f"{submission.name}: kernel failed to start (attempt {attempt} of "
              f"{KERNEL_START_ATTEMPTS}): {graded['error']}", file=sys.stderr)
        time.sleep(random.uniform(0.5, 3.0))  # so jobs that failed together start apart
    return graded


def _otter_run(submission: Path, autograder: Path, timeout: int, student_id: str = "") -> dict:
    env = dict(os.environ, **({STUDENT_ID_ENV: student_id} if student_id else {}))
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "otter", "run", "-a", str(autograder), "-o", out,
               "--no-logo", str(submission)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        results = Path(out) / "results.json"
        if proc.returncode != 0 or not results.exists():
            output = (proc.stderr or proc.stdout).strip()
            lines = output.splitlines()
            return {"error": lines[-1] if lines else f"otter run exited with {proc.returncode}",
                    "output": output}
        data = json.loads(results.read_text())
    tests = [t for t in data["tests"] if "score" in t]
    return {"scores": {t["name"]: (t["score"], t["max_score"]) for t in tests},
            "feedback": {t["name"]: t.get("output", "") for t in tests},
            "report": data.get("output", "")}


# ============================================================ the autograder and the submission
def autograder_info(autograder: Path) -> dict:
    """The questions and points of an autograder zip, and its classroom plugin's config."""
    info = {"points": {}, "assignment": "", "written": {}}
    try:
        with zipfile.ZipFile(autograder) as zf:
            for name in sorted(zf.namelist()):
                if name.startswith("tests/") and name.endswith(".py"):
                    values = {}
                    for node in ast.parse(zf.read(name).decode("utf-8")).body:
                        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                            try:
                                values[node.targets[0].id] = ast.literal_eval(node.value)
                            except ValueError:
                                pass
                    info["points"][values.get("name", Path(name).stem)] = float(values.get("points") or 1)
            config = json.loads(zf.read("otter_config.json")) if "otter_config.json" in zf.namelist() else {}
    except (zipfile.BadZipFile, OSError, SyntaxError, json.JSONDecodeError):
        return info
    for plugin in config.get("plugins", []):
        if isinstance(plugin, dict) and PLUGIN in plugin:
            info["assignment"] = plugin[PLUGIN].get("assignment", "")
            info["written"] = plugin[PLUGIN].get("written") or {}
    return info


def read_notebook(submission: Path) -> Optional[dict]:
    """The submitted notebook (from inside a zip too), or None if there is none."""
    try:
        if submission.suffix == ".zip":
            with zipfile.ZipFile(submission) as zf:
                names = [n for n in zf.namelist() if n.endswith(".ipynb") and "/." not in n]
                return json.loads(zf.read(names[0])) if len(names) == 1 else None
        return json.loads(submission.read_text(encoding="utf-8"))
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def static_flags(nb: Optional[dict], assignment: str) -> list[str]:
    """The audit of the notebook's source (diffusion_tutorial.checks.classroom)."""
    if nb is None:
        return []
    from diffusion_tutorial.checks.classroom import audit_notebook  # the grading environment's
    from diffusion_tutorial.checks.questions import ASSIGNMENTS
    graded = [f for q in ASSIGNMENTS.get(assignment, []) for f in q.graded]
    return audit_notebook(nb, graded)


def identify(submission: Path, nb: Optional[dict]) -> tuple[str, str]:
    """(student identifier, where it came from)."""
    if nb is None:
        return submission.stem, "file name"
    from diffusion_tutorial.checks.classroom import student_id
    return student_id(nb, submission.stem)


def short_feedback(graded: dict) -> str:
    """One line per question below full marks: the first message that names a problem."""
    parts = []
    for question, (score, possible) in graded.get("scores", {}).items():
        if score >= possible:
            continue
        lines = [line.strip() for line in graded.get("feedback", {}).get(question, "").splitlines()]
        named = [line for line in lines if line.startswith(("✗", "❌ ")) and line != "❌ Test case failed"]
        errors = [line for line in lines if re.match(r"^\w*(Error|Exception)\b", line)]
        message = (named or errors or ["failed"])[0].lstrip("✗❌ ")
        parts.append(f"{question}: {message[:300]}")
    return " | ".join(parts) if parts else ("all autograded questions passed" if "scores" in graded else "")


def write_feedback(path: Path, student: str, submission: Path, graded: dict, flags: list, info: dict):
    lines = [f"Feedback for {student} ({submission.name})", ""]
    if "scores" in graded:
        total = sum(s for s, _ in graded["scores"].values())
        lines += [f"Autograded: {total:g} of {sum(m for _, m in graded['scores'].values()):g} points", ""]
        for question, (score, possible) in graded["scores"].items():
            lines += [f"== {question}: {score:g}/{possible:g}",
                      graded["feedback"].get(question, "").rstrip(), ""]
    else:
        lines += [f"The notebook could not be graded: {graded.get('error')}", ""]
    for question, spec in info["written"].items():
        lines.append(f"== {question} (written, {spec.get('points', 1)} point(s)): graded by hand")
    if flags:
        lines += ["", "For the instructor:"] + [f"- {f}" for f in flags]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_rubric(path: Path, info: dict) -> None:
    lines = ["# Rubric of the written questions", ""]
    for question, spec in info["written"].items():
        lines += [f"## {question} ({spec.get('points', 1)} point(s))", ""]
        lines += [f"- {item}" for item in spec.get("rubric", [])] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", help="notebooks, zips, or folders of them")
    parser.add_argument("--autograder", "-a", required=True, help="the autograder.zip to use")
    parser.add_argument("--out", "-o", default="grades.csv", help="CSV file to write")
    parser.add_argument("--feedback", help="folder for the per-student feedback files "
                                           "(default: beside the CSV, <name>_feedback)")
    parser.add_argument("--jobs", "-j", type=int, default=2, help="submissions graded at once")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per submission")
    args = parser.parse_args(argv)

    autograder = Path(args.autograder)
    if not autograder.exists():
        raise SystemExit(f"no autograder zip at {autograder}: run scripts/build_assignments.sh")
    out = Path(args.out)
    feedback_dir = Path(args.feedback) if args.feedback else out.with_name(f"{out.stem}_feedback")
    feedback_dir.mkdir(parents=True, exist_ok=True)
    info = autograder_info(autograder)
    submissions = find_submissions(args.submissions)
    notebooks = [read_notebook(s) for s in submissions]
    students = [identify(s, nb)[0] for s, nb in zip(submissions, notebooks)]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        graded = list(pool.map(lambda s: grade_one(s[0], autograder, args.timeout, s[1]),
                               zip(submissions, students)))

    questions = list(info["points"]) or sorted({q for g in graded for q in g.get("scores", {})})
    full = sum(info["points"].values()) or max(
        (sum(m for _, m in g["scores"].values()) for g in graded if "scores" in g), default=0)
    written = [f"{q} (by hand: max {spec.get('points', 1)})" for q, spec in info["written"].items()]
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "submission", *questions, "total", "possible", *written,
                         "flags", "feedback", "error"])
        for submission, nb, student, g in zip(submissions, notebooks, students, graded):
            flags = static_flags(nb, info["assignment"])
            flags += [line[len("FLAG: "):] for line in g.get("report", "").splitlines()
                      if line.startswith("FLAG: ") and line[len("FLAG: "):] not in flags]
            others = [s.name for s, sid in zip(submissions, students) if sid == student and s != submission]
            if others:
                flags.append(f"the same student identifier as {', '.join(others)}")
            scores = g.get("scores", {})
            total = sum(s for s, _ in scores.values())
            possible = sum(m for _, m in scores.values()) if scores else full
            writer.writerow([student, submission.name, *(scores.get(q, ("", ""))[0] for q in questions),
                             total, possible, *([""] * len(written)), "; ".join(flags),
                             short_feedback(g), g.get("error", "")])
            name = f"{student}__{submission.stem}" if others else student  # one file each
            safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", name) or "unknown"
            write_feedback(feedback_dir / f"{safe}.txt", student, submission, g, flags, info)
            status = f"{total:g}/{possible:g}" if scores else f"ERROR {g.get('error')}"
            print(f"{student} ({submission.name}): {status}"
                  + (f"  FLAGS: {'; '.join(flags)}" if flags else ""))
    if info["written"]:
        write_rubric(out.with_name(f"{out.stem}_rubric.md"), info)
    print(f"wrote {out} and the feedback files in {feedback_dir}")
    return 0 if all("scores" in g for g in graded) else 1


if __name__ == "__main__":
    sys.exit(main())
