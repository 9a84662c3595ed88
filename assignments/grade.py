"""Grade a folder of submissions with an Otter autograder, without Docker, into one CSV.

    python assignments/grade.py --autograder assignments/dist/forward_process/autograder.zip \\
        submissions/forward_process/ --out grades_forward_process.csv

Each submission (a notebook, or the zip that ``grader.export()`` makes) is graded with
``otter run``, which executes it in the current Python environment (so the packages the
notebook imports, ``diffusion_tutorial`` included, must be installed here) and runs every
public and hidden test. The CSV has one row per submission: the score of each autograded
question, the total and the maximum. Written (manual) questions are not included: grade them
by reading the notebooks.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


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


def grade_one(submission: Path, autograder: Path, timeout: int) -> dict:
    """Run ``otter run`` on one submission; return {question: (score, max)} or an error.
    A kernel that fails to start is retried (see ``KERNEL_START_ERRORS``)."""
    for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
        graded = _otter_run(submission, autograder, timeout)
        output = graded.pop("output", "")
        if not any(e in output for e in KERNEL_START_ERRORS):
            return graded
        print(f"{submission.name}: kernel failed to start (attempt {attempt} of "
              f"{KERNEL_START_ATTEMPTS}): {graded['error']}", file=sys.stderr)
        time.sleep(random.uniform(0.5, 3.0))  # so jobs that failed together start apart
    return graded


def _otter_run(submission: Path, autograder: Path, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "otter", "run", "-a", str(autograder), "-o", out,
               "--no-logo", str(submission)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        results = Path(out) / "results.json"
        if proc.returncode != 0 or not results.exists():
            output = (proc.stderr or proc.stdout).strip()
            lines = output.splitlines()
            return {"error": lines[-1] if lines else f"otter run exited with {proc.returncode}",
                    "output": output}
        tests = json.loads(results.read_text())["tests"]
    return {"scores": {t["name"]: (t["score"], t["max_score"]) for t in tests if "score" in t}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", help="notebooks, zips, or folders of them")
    parser.add_argument("--autograder", "-a", required=True, help="the autograder.zip to use")
    parser.add_argument("--out", "-o", default="grades.csv", help="CSV file to write")
    parser.add_argument("--jobs", "-j", type=int, default=2, help="submissions graded at once")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per submission")
    args = parser.parse_args(argv)

    autograder = Path(args.autograder)
    if not autograder.exists():
        raise SystemExit(f"no autograder zip at {autograder}: run scripts/build_assignments.sh")
    submissions = find_submissions(args.submissions)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        graded = list(pool.map(lambda s: grade_one(s, autograder, args.timeout), submissions))

    questions = sorted({q for g in graded for q in g.get("scores", {})})
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["submission", *questions, "total", "possible", "error"])
        for submission, g in zip(submissions, graded):
            scores = g.get("scores", {})
            total = sum(s for s, _ in scores.values())
            possible = sum(m for _, m in scores.values())
            writer.writerow([submission.name, *(scores.get(q, ("", ""))[0] for q in questions),
                             total, possible, g.get("error", "")])
            status = f"{total:g}/{possible:g}" if scores else f"ERROR {g.get('error')}"
            print(f"{submission.name}: {status}")
    print(f"wrote {args.out}")
    return 0 if all("scores" in g for g in graded) else 1


if __name__ == "__main__":
    sys.exit(main())
