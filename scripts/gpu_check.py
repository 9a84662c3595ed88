"""Check the GPU path in one command: chapters at full size, training and sample quality,
the CLI's speed, and the comparison with diffusers, inside one time budget.

    python scripts/gpu_check.py                         # on a CUDA machine, about 9 minutes
    python scripts/gpu_check.py --data-dir /data --budget-minutes 9 --out benchmarks/results/gpu/NAME
    python scripts/gpu_check.py --dry-run               # the same on a CPU at tiny sizes (~3 minutes)

The parts, each in its own processes, so one that fails or runs out of time is reported and
the others still run:

* ``full_training``: trains ``--preset full`` for ``--train-minutes`` (Ctrl-C at the end,
  as a user would stop it), copying the EMA weights at every checkpoint, and scores the
  snapshots with the package's classifier (``diffusion_tutorial.evaluate_samples``, n =
  ``--n``): DDIM-50 for each, and for the last also DDPM-1000, DDIM-50 with η = 0 and the
  other samplers ``diffusion_tutorial.sample`` knows. MNIST's IDX files are read from
  ``--data-dir/MNIST/raw``; without them it trains on ``mnist-sample`` and says so.
* ``cifar10_loop``: ``benchmarks/bench_train_loop.py --preset cifar10``: the CLI's real
  loop on the CIFAR-10 files in ``--data-dir/cifar-10-batches-py``, or on random uint8 data
  in that format (said so in the report); steps/s, images/s, MFU, issue 10's target.
* ``vs_diffusers``: ``benchmarks/bench_vs_diffusers.py --device cuda``, eager, then compiled.
* ``chapters``: every chapter under ``pytest --nbval-lax`` with ``DIFFUSION_TUTORIAL_QUICK=0``
  (``--chapter-jobs`` at a time), each with its wall time; it runs last and gets what the
  others left of the budget; chapters that no longer fit are listed as not run.

Nothing needs the network: place MNIST and CIFAR-10 files in ``--data-dir`` beforehand, and
install the test requirements (nbval, diffusers, mlxtend; offline, from wheels). The result
is ONE folder (``--out``, default ``benchmarks/results/gpu/<date>-<gpu>``) of at most eight
files: ``report.md``, ``report.json``, ``log.txt``, the benchmarks' JSON and a grid of
samples. Commit that folder and run ``python benchmarks/make_benchmarks_page.py``: the
Benchmarks page shows every report folder under ``benchmarks/results/gpu/``.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _perf import (has_mnist, read_loss_log, run_command, steady_rate, target_applies,  # noqa: E402
                   target_row)

PARTS = ("full_training", "cifar10_loop", "vs_diffusers", "chapters")     # the order they run in
WEIGHTS = {"full_training": 0.36, "cifar10_loop": 0.22, "vs_diffusers": 0.20, "chapters": 0.22}
MAX_FILES = 8
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
NEW_SAMPLERS = (("dpm++2m", 20), ("heun", 20))


# ---------------------------------------------------------------------- the time budget
class Budget:
    """A global deadline shared by the parts. A part gets the time left times its weight
    over the weights of the parts still to run, so what one part leaves unused goes to
    the parts after it, and the last part gets all that is left."""

    def __init__(self, seconds: float, weights: dict, clock: Callable[[], float] = time.monotonic):
        self.clock, self.weights = clock, dict(weights)
        self.start = clock()
        self.deadline = self.start + seconds
        self.pending = list(weights)

    def left(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def allot(self, part: str) -> float:
        """Seconds for ``part`` now (it is then no longer pending)."""
        total = sum(self.weights[p] for p in self.pending)
        share = self.left() * self.weights[part] / total if total else 0.0
        self.pending.remove(part)
        return share


def slug(text: str) -> str:
    """Lower-case letters, digits and single dashes: a safe file or folder name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


# ---------------------------------------------------------------------- processes
def missing_modules(*names: str) -> Optional[dict]:
    """A failed part's result naming the packages that are not installed, or None."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        return {"status": "failed", "error": f"missing package(s) {', '.join(missing)}: install them "
                "(`pip install -r requirements.txt`; offline, from wheels placed beforehand)"}
    return None


# ---------------------------------------------------------------------- the machine
def machine_info(device: str, commit: str = "") -> dict:
    """GPU name, memory and driver, torch / CUDA / cuDNN versions, CPU and the commit."""
    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpu_cores": os.cpu_count(), "device": device,
            "platform": platform.platform(terse=True)}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}",
                    cudnn=torch.backends.cudnn.version())
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            info["driver"] = "unknown (nvidia-smi did not answer)"
    info["commit"] = commit or git_commit()
    info["packages"] = {n: package_version(n) for n in ("diffusers", "nbval", "mlxtend", "torchvision")}
    return info


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git here: pass --commit)"
    return (sha + (" with local changes" if dirty else "")) if sha else "unknown (no git here: pass --commit)"


def package_version(name: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------- part 1: full preset
class SnapshotWatcher(threading.Thread):
    """Copies ``run/checkpoint/ema.safetensors`` to ``snapshots/step_XXXXXX.safetensors``
    each time the run writes a new checkpoint (a run keeps only its latest one)."""

    def __init__(self, run_dir: Path, snapshots: Path, poll: float = 0.5):
        super().__init__(daemon=True)
        self.run_dir, self.snapshots, self.poll = run_dir, snapshots, poll
        self.stop = threading.Event()
        snapshots.mkdir(parents=True, exist_ok=True)

    def step(self) -> Optional[int]:
        import torch
        try:
            state = torch.load(self.run_dir / "checkpoint" / "state.pt", map_location="cpu",
                               weights_only=True)
            return int(state["step"])
        except (OSError, RuntimeError, KeyError, EOFError, ValueError):
            return None

    def copy_once(self) -> None:
        step = self.step()
        target = self.snapshots / f"step_{step:06d}.safetensors" if step is not None else None
        if target is None or target.exists():
            return
        tmp = self.snapshots / ".copy.tmp"
        try:
            shutil.copy(self.run_dir / "checkpoint" / "ema.safetensors", tmp)
        except OSError:
            return                                   # the checkpoint is being replaced
        if self.step() == step:                      # the same checkpoint before and after the copy
            os.replace(tmp, target)

    def run(self) -> None:
        while not self.stop.wait(self.poll):
            self.copy_once()


def part_full_training(ctx, seconds: float) -> dict:
    missing = missing_modules("mlxtend")
    if missing:
        return missing
    t_part = time.monotonic()
    work = ctx.work / "full"
    run_dir, snaps = work / "run", work / "snapshots"
    if ctx.dry_run:
        preset, data = ["--preset", "tiny", "--image-size", "28"], []
        data_note = "tiny preset at 28x28 on mnist-sample (dry run)"
    elif has_mnist(ctx.data_dir):
        preset, data = ["--preset", "full"], ["--data-dir", ctx.data_dir]
        data_note = "MNIST's training files in --data-dir"
    else:
        preset, data = ["--preset", "full"], ["--dataset", "mnist-sample"]
        data_note = "mnist-sample (4,500 digits shipped with the package): no MNIST files in --data-dir"
    eval_reserve = 40.0 if ctx.dry_run else 80.0     # start-up, DDPM-1000 and DDIM-50 of n = 1,000
    train_s = max(5.0, min(ctx.train_minutes * 60, seconds - eval_reserve))
    cmd = [sys.executable, "-m", "diffusion_tutorial", "train", *preset, *data, "--out", run_dir,
           "--steps", 10**7, "--checkpoint-every", ctx.checkpoint_every, "--sample-every", 0,
           "--log-every", 10 if ctx.dry_run else 100, "--no-progress", "--device", ctx.device,
           *ctx.train_flags]
    watcher = SnapshotWatcher(run_dir, snaps)
    watcher.start()
    run = run_command(cmd, train_s, ctx.log, "full_training: train", interrupt_first=True,
                      start_file=run_dir / "loss_log.jsonl")
    watcher.stop.set()
    watcher.join()
    watcher.copy_once()                              # the checkpoint saved at Ctrl-C
    out = {"data": data_note, "train_command": display(cmd, ctx), "train_exit": run["rc"],
           "train_wall_s": run["wall_s"], "train_limit_s": round(train_s, 1)}
    log = read_loss_log(run_dir / "loss_log.jsonl") if (run_dir / "loss_log.jsonl").exists() else []
    if run["rc"] not in (0, 130) or not log:
        return {**out, "status": "failed",
                "error": f"training failed (exit {run['rc']}): {run['tail'][-600:]}"}
    rate = steady_rate(log, log[0]["time"] + 0.25 * (log[-1]["time"] - log[0]["time"]))
    out.update(steps=log[-1]["step"], train_seconds_logged=log[-1]["time"],
               final_loss=sum(r["loss"] for r in log[-20:]) / len(log[-20:]), steady=rate)
    applies = target_applies(ctx.gpu) and not ctx.dry_run
    out["targets"] = [target_row("full_cli_steps_per_s", rate["steps_per_s"] if rate else None, applies)]
    eval_json = work / "eval.json"
    eval_s = max(10.0, seconds - run["wall_s"])
    ev = run_command([sys.executable, Path(__file__), "evaluate", run_dir, snaps, "--n", ctx.n,
                      "--ddim-steps", ctx.ddim_steps, "--seconds", eval_s - 10, "--json", eval_json,
                      "--grid", ctx.out / "samples_full.png"],
                     eval_s, ctx.log, "full_training: evaluate")
    out["evaluation"] = json.loads(eval_json.read_text()) if eval_json.exists() else []
    out["eval_wall_s"] = ev["wall_s"]
    if ev["rc"] != 0 or not out["evaluation"]:
        status = "timed out" if ev["timed_out"] else "failed"
        return {**out, "status": status, "error": f"evaluation failed (exit {ev['rc']}): {ev['tail'][-600:]}"}
    if out["targets"][0]["met"] is False or ctx.dry_run:   # what bounds the step (a dry run: the code path)
        out.update(profile_full(ctx, max(30.0, seconds - (time.monotonic() - t_part))))
    broken = [f"{r['sampler']}-{r['steps']}: {r['error']}" for r in out["evaluation"] if "error" in r]
    if broken:
        return {**out, "status": "failed", "error": "sampling failed: " + "; ".join(broken)}
    return {**out, "status": "passed"}


def profile_full(ctx, seconds: float) -> dict:
    """Where the full preset's step spends its time: ``bench_train_loop.py --profile-only``
    (a short in-process run of the real ``train``), within ``seconds``."""
    name = "profile_full"
    size = (["--preset", "tiny", "--image-size", 28, "--profile-steps", 3] if ctx.dry_run
            else ["--preset", "full"])
    cmd = [sys.executable, ROOT / "benchmarks" / "bench_train_loop.py", "--profile-only", *size,
           "--data-dir", ctx.data_dir, "--device", ctx.device, "--out-dir", ctx.work, "--result-name", name,
           "--work-dir", ctx.work / "profile", *ctx.train_flags]
    run = run_command(cmd, seconds, ctx.log, "full_training: profile")
    path = ctx.work / f"{name}.json"
    if run["rc"] != 0 or not path.exists():
        return {"profile_error": run["tail"][-400:]}
    res = json.loads(path.read_text())
    return {"profile": res["profile"]["shares"], "bound": res["bound"]}


def available_samplers() -> list[tuple[str, int]]:
    """The samplers of :data:`NEW_SAMPLERS` that ``diffusion_tutorial.sample`` accepts."""
    import torch
    from diffusion_tutorial import GaussianDiffusion, sample
    diffusion = GaussianDiffusion(timesteps=10)
    found = []
    for name, steps in NEW_SAMPLERS:
        try:
            sample(diffusion, lambda x, t, *a: torch.zeros_like(x), (1, 1, 2, 2), sampler=name, steps=2,
                   progress=False)
        except ValueError as err:                # "unknown sampler": not in this version
            if "unknown sampler" in str(err).lower():
                continue
        except Exception:                        # noqa: BLE001 - it exists; its real run will tell
            pass
        found.append((name, steps))
    return found


def evaluate_run(run_dir: Path, snapshots: Path, n: int, ddim_steps: int, seconds: float,
                 json_path: Path, grid: Optional[Path]) -> list[dict]:
    """Score EMA snapshots with the package's classifier, the last one first and with every
    sampler, then the older ones newest first with DDIM; skip what no longer fits in
    ``seconds``. Writes ``json_path`` after every row."""
    import torch
    from safetensors.torch import load_file
    import diffusion_tutorial as dt
    deadline = time.monotonic() + seconds
    config, model, diffusion = dt.load_run(run_dir)
    cuda = next(model.parameters()).is_cuda
    log = read_loss_log(run_dir / "loss_log.jsonl")

    def train_s(step: int) -> Optional[float]:    # the time of the last log line at or before step
        logged = [r["time"] for r in log if r["step"] <= step]
        return logged[-1] if logged else None
    snaps = sorted(snapshots.glob("step_*.safetensors"), reverse=True)
    T = diffusion.num_timesteps
    plan = []
    for i, path in enumerate(snaps):
        plan.append((path, "ddim", ddim_steps, 1.0))
        if i == 0:
            plan += [(path, "ddpm", T, 1.0), (path, "ddim", ddim_steps, 0.0)]
            plan += [(path, name, steps, 0.0) for name, steps in available_samplers()]
    rows, per_step, loaded = [], None, None
    for path, sampler, steps, eta in plan:
        cost = per_step * steps if per_step else 0.0
        if time.monotonic() + cost > deadline:
            rows.append({"snapshot": path.stem, "sampler": sampler, "steps": steps,
                         "skipped": "time budget"})
            continue
        if loaded != path:
            model.load_state_dict(load_file(str(path)))
            loaded = path
        step = int(path.stem.split("_")[1])
        row = {"snapshot": path.stem, "step": step, "train_s": train_s(step), "sampler": sampler,
               "steps": steps, "eta": eta, "n": n}
        try:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            x = dt.sample_images(model, diffusion, config, n, sampler=sampler, steps=steps, eta=eta, seed=0)
            if cuda:
                torch.cuda.synchronize()
            took = time.perf_counter() - t0
            m = dt.evaluate_samples(x)
        except Exception as err:  # noqa: BLE001 - one sampler's fault must not lose the other rows
            rows.append({**row, "error": f"{type(err).__name__}: {err}"[:300]})
            continue
        per_step = per_step or took / steps
        rows.append({**row, "sample_s": round(took, 2),
                     **{k: m[k] for k in ("fid", "fid_floor", "confident_share", "confident_share_real",
                                          "class_entropy")}})
        json_path.write_text(json.dumps(rows, indent=1))
        if grid is not None and len(rows) == 1:
            dt.save_grid(x[:64], grid, nrow=8)
    json_path.write_text(json.dumps(rows, indent=1))
    return rows


# ---------------------------------------------------------------------- part 2: cifar10 loop
def part_cifar10_loop(ctx, seconds: float) -> dict:
    overhead = 40.0 if ctx.dry_run else 60.0     # start-ups, data, FLOP count, checkpoint at Ctrl-C, profile
    cmd = [sys.executable, ROOT / "benchmarks" / "bench_train_loop.py", "--preset", "cifar10",
           "--data-dir", ctx.data_dir, "--device", ctx.device, "--out-dir", ctx.out,
           "--result-name", "train_loop_cifar10", "--work-dir", ctx.work / "cifar10",
           "--seconds", max(5.0, min(ctx.cifar_seconds, seconds - overhead))]
    if ctx.dry_run:
        cmd += ["--random-per-batch", 64, "--profile", "always", "--profile-steps", 3, "--log-every", 2,
                "--batch-size", 4, "--base-channels", 16, "--channel-mults", "1,2", "--num-res-blocks", 1,
                "--groups", 8, "--num-workers", 0]
    run = run_command(cmd + ctx.train_flags, seconds, ctx.log, "cifar10_loop")
    path = ctx.out / "train_loop_cifar10.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    keep = ("data", "batch", "steps_per_s", "images_per_s", "mfu", "peak", "gflop_per_image", "ended",
            "train_command", "bound", "targets")
    out = {"command": display(cmd + ctx.train_flags, ctx),
           "result_file": path.name if path.exists() else None, **{k: res[k] for k in keep if k in res}}
    if run["rc"] != 0 or not res.get("ok"):
        status = "timed out" if run["timed_out"] else "failed"
        return {**out, "status": status, "error": f"exit {run['rc']}: {run['tail'][-600:]}"}
    return {**out, "status": "passed"}


# ---------------------------------------------------------------------- part 3: vs diffusers
def part_vs_diffusers(ctx, seconds: float) -> dict:
    missing = missing_modules("diffusers")
    if missing:
        return missing
    size = (["--batch", 4, "--steps", 1, "--rounds", 1, "--loop-repeats", 1, "--warmup", 1] if ctx.dry_run
            else ["--steps", 10, "--rounds", 3, "--loop-repeats", 1])
    base = [sys.executable, ROOT / "benchmarks" / "bench_vs_diffusers.py", "--device", ctx.device,
            "--out-dir", ctx.out, *size]
    cheap = ["--compile-backend", "eager", "--layouts", "channels_last"] if ctx.dry_run else []
    variants = [("eager", ["--no-compile"], 0.4), ("compiled", ["--compile", "--only-training", *cheap], 1.0)]
    out, status = {"variants": {}}, "passed"
    t_end = time.monotonic() + seconds
    for name, flags, share in variants:
        limit = (t_end - time.monotonic()) * share
        cmd = base + flags + ["--result-name", f"vs_diffusers_{name}"]
        run = run_command(cmd, limit, ctx.log, f"vs_diffusers: {name}")
        path = ctx.out / f"vs_diffusers_{name}.json"
        v = {"command": display(cmd, ctx), "exit": run["rc"], "wall_s": run["wall_s"]}
        if run["rc"] == 0 and path.exists():
            c = json.loads(path.read_text())["training"]
            v.update(result_file=path.name, rows=c["rows"], ratios=c["ratios"], targets=c.get("targets", []),
                     bound=c.get("bound"))
        else:
            status = "timed out" if run["timed_out"] else "failed"
            v["error"] = run["tail"][-600:]
        out["variants"][name] = v
    out["targets"] = out["variants"]["compiled"].get("targets", [])
    return {**out, "status": status}


# ---------------------------------------------------------------------- part 4: chapters
def part_chapters(ctx, seconds: float) -> dict:
    missing = missing_modules("nbval", "ipykernel")
    if missing:
        return missing
    deadline = time.monotonic() + seconds
    env = {"DIFFUSION_TUTORIAL_QUICK": "1" if ctx.dry_run else "0", "MPLBACKEND": "Agg",
           "DIFFUSION_TUTORIAL_DATA_DIR": str(Path(ctx.data_dir).resolve())}

    def one(nb: Path) -> dict:
        left = deadline - time.monotonic()
        if left < 20:
            return {"chapter": nb.stem, "status": "not run (time budget)"}
        cmd = [sys.executable, "-m", "pytest", "--nbval-lax", nb.relative_to(ROOT), "-p", "no:cacheprovider",
               "-q", "-o", "addopts="]
        run = run_command(cmd, min(ctx.chapter_timeout, left), ctx.log, f"chapter {nb.stem}", env=env)
        status = "timed out" if run["timed_out"] else ("passed" if run["rc"] == 0 else "failed")
        row = {"chapter": nb.stem, "status": status, "wall_s": run["wall_s"]}
        if status != "passed":
            row["error"] = run["tail"][-600:]
        return row

    with concurrent.futures.ThreadPoolExecutor(max_workers=ctx.chapter_jobs) as pool:
        rows = list(pool.map(one, ctx.chapters))
    statuses = {r["status"] for r in rows}
    status = ("failed" if "failed" in statuses else "timed out" if "timed out" in statuses
              else "incomplete" if statuses != {"passed"} else "passed")
    return {"status": status, "quick_mode": ctx.dry_run, "jobs": ctx.chapter_jobs, "chapters": rows}


# ---------------------------------------------------------------------- the report
def display(cmd: list, ctx) -> str:
    """A command as a reader would type it: paths relative to the repository, work folders
    and the data folder named by placeholders."""
    text = shlex.join(map(str, cmd)).replace(sys.executable, "python")
    for path, name in ((ctx.work, "WORK"), (ctx.out, "OUT"), (Path(ctx.data_dir).resolve(), "DATA"),
                       (str(ROOT) + os.sep, ""), (ROOT, ".")):
        text = text.replace(str(path), name)
    return text


def collect_targets(parts: dict) -> list[dict]:
    return [t for p in parts.values() for t in p.get("targets", [])]


def write_report(report: dict, out: Path) -> None:
    """``report.json`` and ``report.md`` in ``out`` (rewritten after every part)."""
    report["targets"] = collect_targets(report["parts"])
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(render_markdown(report))


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"
    return str(v)


def _table(rows: list[dict], cols: list[str], heads: Optional[list] = None) -> list[str]:
    lines = ["| " + " | ".join(heads or cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return lines + [""]


def render_markdown(report: dict) -> str:
    """The report as Markdown: machine, parts, targets, then each part's details."""
    m = report["machine"]
    where = m.get("gpu") or f"CPU only ({m['cpu_cores']} cores)"
    title = ("GPU check (dry run on a CPU: tiny sizes, not GPU figures)" if report["dry_run"]
             else f"GPU check: {where}, {report['date'][:10]}")
    lines = [f"# {title}", "",
             f"{where}; {report['date']}; commit {m['commit']}. Command: `{report['command']}`", ""]
    lines += _table([{"item": k, "value": v} for k, v in (
        ("GPU memory (GiB)", m.get("gpu_memory_gib")), ("driver", m.get("driver")),
        ("compute capability", m.get("compute_capability")), ("torch", m["torch"]), ("CUDA", m.get("cuda")),
        ("cuDNN", m.get("cudnn")), ("Python", m["python"]), ("CPU cores", m["cpu_cores"]),
        ("packages", ", ".join(f"{k} {v or 'not installed'}" for k, v in m["packages"].items())))
        if v is not None],
        ["item", "value"])
    lines += [f"Budget {report['budget_s']:.0f} s; took {report['wall_s']:.0f} s. "
              f"Overall: **{report['status']}**.", ""]
    lines += _table([{"part": k, **{c: v.get(c) for c in ("status", "wall_s", "budget_s")}}
                     for k, v in report["parts"].items()], ["part", "status", "wall_s", "budget_s"],
                    ["part", "status", "wall time (s)", "budget (s)"])
    if report["targets"]:
        lines += ["## Issue 10's targets", ""]
        verdict = {True: "yes", False: "no"}
        lines += _table([{**t, "met": verdict.get(t["met"], "not judged: " + t.get("why_not_judged", ""))}
                         for t in report["targets"]], ["target", "goal", "measured", "met"])
    parts = report["parts"]
    if "full_training" in parts:
        p = parts["full_training"]
        lines += ["## Training the full preset, and its samples", "", f"Data: {p.get('data', '–')}.", ""]
        if p.get("train_command"):
            lines += [f"`{p['train_command']}`, stopped after {p['train_limit_s']} s: "
                      f"{p.get('steps', '–')} "
                      f"steps, final loss {_fmt(p.get('final_loss'))}; steady rate "
                      f"{_fmt((p.get('steady') or {}).get('steps_per_s'))} steps/s.", ""]
        rows = [r for r in p.get("evaluation", []) if "fid" in r]
        if rows:
            lines += _table(rows, ["step", "train_s", "sampler", "steps", "eta", "n", "sample_s",
                                   "confident_share", "fid", "fid_floor", "class_entropy"])
            lines += ["`samples_full.png`: 64 of the first row's samples.", ""]
        if p.get("bound"):
            lines += [f"Profile of the training step: {p['bound']}.", ""]
        skipped = [f"{r['snapshot']} {r['sampler']}-{r['steps']}" for r in p.get("evaluation", [])
                   if "skipped" in r]
        if skipped:
            lines += ["Not scored for lack of time: " + ", ".join(skipped) + ".", ""]
    if "cifar10_loop" in parts:
        p = parts["cifar10_loop"]
        lines += ["## The cifar10 preset's CLI loop", "", f"Data: {p.get('data', '–')}.", ""]
        if "images_per_s" in p:
            mfu = (f"MFU {_fmt(p['mfu'])} of {p['peak']}" if p.get("mfu") is not None
                   else f"MFU not computed ({p['peak']})")
            lines += [f"Batch {p['batch']}: {_fmt(p['steps_per_s'])} steps/s = {_fmt(p['images_per_s'])} "
                      f"images/s; {_fmt(p['gflop_per_image'])} GFLOP per image; {mfu}.", ""]
        if p.get("bound"):
            lines += [f"Profile: {p['bound']}.", ""]
    if "vs_diffusers" in parts:
        lines += ["## Against diffusers' UNet2DModel", ""]
        for name, v in parts["vs_diffusers"].get("variants", {}).items():
            lines += [f"**{name}**: `{v['command']}`", ""]
            if "rows" in v:
                cols = [c for c in ("model", "layout", "images_per_s", "ms_per_step", "mfu")
                        if c in v["rows"][0]]
                lines += _table(v["rows"], cols)
                lines += [", ".join(f"{k}: {_fmt(x)}" for k, x in v["ratios"].items()) + ".", ""]
            if v.get("bound"):
                lines += [f"Profile of our step: {v['bound']}.", ""]
    if "chapters" in parts:
        p = parts["chapters"]
        mode = "quick mode" if p.get("quick_mode") else "full size (DIFFUSION_TUTORIAL_QUICK=0)"
        lines += ["## The chapters", "", f"Under `pytest --nbval-lax`, {mode}, {p.get('jobs', 1)} at a time.",
                  ""]
        lines += _table(p.get("chapters", []), ["chapter", "status", "wall_s"],
                        ["chapter", "status", "wall time (s)"])
    errors = [(k, v["error"]) for k, v in parts.items() if v.get("error")]
    if errors:
        lines += ["## Errors", ""]
        for k, e in errors:
            lines += [f"**{k}**:", "", "```", e.strip()[-600:], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def check_out_folder(out: Path) -> list[str]:
    """Problems with the result folder: more than MAX_FILES files, or names other than
    letters, digits, '.', '_' and '-' (what the device tool brings back)."""
    files = [p for p in out.rglob("*") if p.is_file()]
    problems = [f"{len(files)} files (at most {MAX_FILES})"] if len(files) > MAX_FILES else []
    problems += [f"bad name {p.name!r}" for p in files if not SAFE_NAME.match(p.name)]
    return problems


# ---------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script itself")
    p.add_argument("--out", default=None, help="result folder (default benchmarks/results/gpu/<date>-<gpu>)")
    p.add_argument("--data-dir", default="data", help="MNIST/raw and cifar-10-batches-py, placed beforehand")
    p.add_argument("--budget-minutes", type=float, default=None, help="for everything (default 9; dry run 8)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--train-minutes", type=float, default=None, help="full preset training (default 1.25)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="snapshot interval in steps (500)")
    p.add_argument("--n", type=int, default=None, help="samples per evaluation (default 1000; dry run 32)")
    p.add_argument("--ddim-steps", type=int, default=None, help="DDIM steps per evaluation (default 50)")
    p.add_argument("--cifar-seconds", type=float, default=None, help="cifar10 CLI loop (default 60)")
    p.add_argument("--chapters", default=None, help="comma-separated chapter names (default: all)")
    p.add_argument("--chapter-jobs", type=int, default=None, help="chapters at a time (default 4)")
    p.add_argument("--chapter-timeout", type=float, default=300.0, help="seconds per chapter")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="passed to the training commands (default: theirs)")
    p.add_argument("--compile-mode", default=None,
                   help="default|reduce-overhead|max-autotune, passed to the training commands")
    p.add_argument("--mixed-precision", default=None,
                   help="auto|bf16|fp16|no, passed to the training commands")
    p.add_argument("--commit", default="", help="the commit, where the copy has no git history")
    p.add_argument("--work-dir", default=None, help="runs and random data (default: temporary, removed)")
    args = p.parse_args(argv)
    dry = args.dry_run
    defaults = dict(budget_minutes=8.0 if dry else 9.0, train_minutes=0.25 if dry else 1.25,
                    checkpoint_every=10 if dry else 500, n=32 if dry else 1000, ddim_steps=10 if dry else 50,
                    cifar_seconds=15.0 if dry else 60.0, chapter_jobs=1 if dry else 4,
                    chapters="00_introduction" if dry else None)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {sorted(unknown)}: choose from {','.join(PARTS)}")
    return args


def train_flags(args) -> list[str]:
    """Flags every training command gets; the dry run names the trainer's GPU flags
    explicitly, so a renamed flag fails here, on a CPU, before it fails on a GPU."""
    flags = []
    if args.compile is not None:
        flags.append("--compile" if args.compile else "--no-compile")
    elif args.dry_run:
        flags.append("--no-compile")
    if args.compile_mode:
        flags += ["--compile-mode", args.compile_mode]
    if args.mixed_precision or args.dry_run:
        flags += ["--mixed-precision", args.mixed_precision or "auto"]
    if args.dry_run:
        flags.append("--no-channels-last")
    return flags


class Context:
    """What the parts share: the options, folders, device and log."""

    def __init__(self, args, out: Path, work: Path, device: str, gpu: Optional[str]):
        self.__dict__.update(vars(args))
        self.out, self.work, self.device, self.gpu = out, work, device, gpu
        self.log = out / "log.txt"
        self.train_flags = train_flags(args)
        names = args.chapters.split(",") if args.chapters else None
        books = sorted((ROOT / "book").glob("*.ipynb"))
        self.chapters = [b for b in books if names is None or b.stem in names]


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "evaluate":
        return evaluate_main(sys.argv[2:])
    args = parse_args(argv)
    import torch
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        raise SystemExit("error: no CUDA GPU is visible: run on a GPU machine, or use --dry-run to check "
                         "the script on a CPU.")
    device = "cuda" if cuda else "cpu"
    info = machine_info(device, args.commit)
    date = time.strftime("%Y-%m-%d", time.gmtime())
    default_out = (ROOT / "runs" / "gpu_check_dry_run" if args.dry_run
                   else ROOT / "benchmarks" / "results" / "gpu" / f"{date}-{slug(info['gpu'])}")
    out = Path(args.out or default_out).resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} is not empty: give another --out, or remove it first.")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_check-")).resolve()
    ctx = Context(args, out, work, device, info.get("gpu"))
    budget = Budget(args.budget_minutes * 60, {p: WEIGHTS[p] for p in PARTS if p in args.parts.split(",")})
    report = {"kind": "gpu_check", "format": 1, "dry_run": args.dry_run,
              "command": display(["python", "scripts/gpu_check.py", *(sys.argv[1:] if argv is None else argv)],
                                 ctx),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": info,
              "budget_s": args.budget_minutes * 60, "wall_s": 0.0, "status": "running", "parts": {}}
    parts = {"full_training": part_full_training, "cifar10_loop": part_cifar10_loop,
             "vs_diffusers": part_vs_diffusers, "chapters": part_chapters}
    try:
        for name in list(budget.pending):
            seconds = budget.allot(name)
            print(f"[{time.monotonic() - budget.start:5.0f} s] {name}: {seconds:.0f} s", flush=True)
            t0 = time.monotonic()
            try:
                result = parts[name](ctx, seconds)
            except Exception as err:  # noqa: BLE001 - one part's fault must not stop the others
                result = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            result.update(wall_s=round(time.monotonic() - t0, 1), budget_s=round(seconds, 1))
            report["parts"][name] = result
            report["wall_s"] = round(time.monotonic() - budget.start, 1)
            write_report(report, out)
            print(f"        {name}: {result['status']} in {result['wall_s']} s", flush=True)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    report["wall_s"] = round(time.monotonic() - budget.start, 1)
    passed = all(p["status"] == "passed" for p in report["parts"].values())
    report["status"] = "passed" if passed else "failed"
    problems = check_out_folder(out)
    if problems:
        report["status"] = "failed"
        report["parts"].setdefault("output", {"status": "failed", "error": "; ".join(problems)})
    write_report(report, out)
    print(f"{report['status']} in {report['wall_s']:.0f} s; report: {out / 'report.md'}")
    return 0 if report["status"] == "passed" else 1


def evaluate_main(argv) -> int:
    p = argparse.ArgumentParser(prog="gpu_check.py evaluate", description=evaluate_run.__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("snapshots", type=Path)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--grid", type=Path, default=None)
    a = p.parse_args(argv)
    rows = evaluate_run(a.run_dir, a.snapshots, a.n, a.ddim_steps, a.seconds, a.json, a.grid)
    return 0 if any("fid" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
