"""Shared helpers for the benchmark scripts: machine description, timing, JSON results.

Every script writes ``benchmarks/results/<name>.json`` holding the machine description,
the exact command, the settings and the measured rows; ``make_benchmarks_page.py``
renders them all into ``book/benchmarks.md``.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from diffusion_tutorial.utils import wall_times

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu", note: str = "") -> dict:
    """What the numbers were measured on (load average included: a busy machine is slower)."""
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(terse=True),
        "device": device,
    }
    try:
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    if note:
        info["note"] = note
    return info


def add_note_option(parser) -> None:
    """``--note``: free text on the machine's state (idle, or busy with other jobs), stored
    with the results next to the measured load average."""
    parser.add_argument("--note", default="",
                        help="the machine's state (e.g. idle, or busy with other jobs)")


def command() -> str:
    """The command line that ran this script, to put next to its results (script path
    relative to the repository; absolute paths of local folders shown as ``DIR``)."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), Path(__file__).resolve().parent.parent)
    args = ["DIR" if a.startswith("/") else a for a in sys.argv[1:]]
    return "python " + " ".join(shlex.quote(a) for a in [script] + args)


def timed(fn, repeats: int, warmup: int = 1, device=None) -> dict:
    """Median and min wall time (s) of ``fn()`` over ``repeats`` calls after ``warmup``
    (:func:`diffusion_tutorial.utils.wall_times`, which synchronises a CUDA ``device``).
    The median is the robust number on a shared machine; the min is the least disturbed."""
    times = wall_times(fn, repeats, warmup, device)
    return {"median": statistics.median(times), "min": min(times), "repeats": repeats}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB; ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(name: str, payload: dict, out_dir=None) -> Path:
    out_dir = Path(out_dir) if out_dir else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"name": name, "command": command(),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A plain aligned text table of ``rows`` restricted to ``columns``."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
