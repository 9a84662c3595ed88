"""Shared pieces of the GPU-speed benchmarks: issue 10's targets, the chip's peak, the
steady rate of a training loss log, random CIFAR-10-format data, and a profile of where a
step's time goes (convolution, normalization, attention, other).

Also one way to run a command with a time limit. Used by ``bench_train_loop.py``,
``bench_vs_diffusers.py``, ``scripts/gpu_check.py`` and ``make_benchmarks_page.py``.
"""
from __future__ import annotations

import json
import os
import pickle
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# The speed targets of issue 10, each for one H100-class GPU (H100 or H200).
TARGETS = {
    "cifar10_cli_images_per_s": {
        "what": "`--preset cifar10` CLI training loop, batch 128 (images/s)",
        "goal": 5400.0},                # 2x the DDPM paper's TPU v3-8 (21 steps/s x 128)
    "full_cli_steps_per_s": {
        "what": "`--preset full` CLI training loop (steps/s)",
        "goal": 80.0},
    "ours_vs_diffusers_compiled": {
        "what": "our compiled training step / diffusers' compiled UNet2DModel, equal parameters",
        "goal": 1.2},
}
TARGET_GPUS = ("H100", "H200")

CATEGORIES = ("convolution", "normalization", "attention", "other")
# Op and kernel names by category (lower case substrings); the first match wins.
_KEYWORDS = (
    ("convolution", ("convolution", "conv2d", "cudnn_conv", "fprop", "dgrad", "wgrad",
                     "implicit_gemm", "implicit_convolve")),
    ("attention", ("attention", "sdpa", "softmax", "fmha", "flash", "bmm")),
    ("normalization", ("norm",)),
)


# ---------------------------------------------------------------------- targets
def target_applies(gpu_name: Optional[str]) -> bool:
    """The targets are set for one H100-class GPU; elsewhere they are printed, not judged."""
    return bool(gpu_name) and any(g in gpu_name.upper() for g in TARGET_GPUS)


def target_row(key: str, measured: Optional[float], applies: bool, why_not: str = "") -> dict:
    """``{target, goal, measured, met}``; ``met`` is None where the target does not apply
    (not an H100-class GPU, or sizes other than the target's) or nothing was measured."""
    t = TARGETS[key]
    met = None if (not applies or measured is None) else bool(measured >= t["goal"])
    row = {"key": key, "target": t["what"], "goal": t["goal"], "measured": measured, "met": met}
    if met is None:
        row["why_not_judged"] = why_not or ("not measured" if measured is None else
                                            "the target is for one H100-class GPU at the preset's sizes")
    return row


def format_targets(rows: list[dict]) -> str:
    """Plain text: one line per target, 'target / measured / met'."""
    lines = []
    for r in rows:
        m = "–" if r["measured"] is None else f"{r['measured']:,.4g}"
        met = {True: "met", False: "NOT met", None: f"not judged ({r.get('why_not_judged', '')})"}[r["met"]]
        lines.append(f"target {r['target']}: >= {r['goal']:,.4g}; measured {m}; {met}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- the chip
def peak_flops(gpu_name: Optional[str], override_tflops: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s, label) of the chip for MFU: ``override_tflops`` if given, else the
    dense rate in :data:`diffusion_tutorial.flops.GPU_PEAK_FLOPS` whose key appears in the
    GPU's name (bf16 from A100 on, fp16 on T4 and V100); (0, reason) when unknown."""
    from diffusion_tutorial.flops import GPU_PEAK_FLOPS
    if override_tflops:
        return override_tflops * 1e12, f"{override_tflops:g} TFLOP/s (given)"
    if not gpu_name:
        return 0.0, "no GPU: MFU not computed"
    for key, value in GPU_PEAK_FLOPS.items():
        if key in gpu_name.upper():
            kind = "fp16" if key in ("T4", "V100") else "bf16"
            return value, f"{value / 1e12:g} TFLOP/s ({key} dense {kind} peak, datasheet)"
    return 0.0, f"peak of {gpu_name} unknown: pass --peak-tflops"


def model_step_flops(config) -> int:
    """FLOPs of one training step's forward and backward pass of ``config``'s UNet at its
    batch size, counted with FlopCounterMode on the meta device (no memory, no compute),
    where attention runs as plain matrix products and is counted (within 0.5 % of the count
    on a GPU for the cifar10 preset; a CPU's fused attention kernel is not counted)."""
    import torch
    from diffusion_tutorial.flops import training_step_flops
    meta = torch.device("meta")
    model = config.build_model(meta)
    b, c, r = config.batch_size, config.channels, config.resolution
    x = torch.empty(b, c, r, r, device=meta)
    t = torch.zeros(b, dtype=torch.long, device=meta)
    y = torch.zeros(b, dtype=torch.long, device=meta) if config.num_classes else None
    inputs = (x, t) if y is None else (x, t, y)
    return training_step_flops(model, inputs, loss_fn=lambda out: out.float().pow(2).mean())


# ---------------------------------------------------------------------- loss logs
def read_loss_log(path) -> list[dict]:
    """The records of a run's ``loss_log.jsonl`` (step, loss, lr, time), in step order."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return sorted(records, key=lambda r: r["step"])


def steady_rate(records: list[dict], skip_s: float) -> Optional[dict]:
    """Training steps per second after the first ``skip_s`` seconds of the run (start-up,
    compilation, warm-up), from the (step, time) pairs of a loss log: the steps between
    the first record at or after ``skip_s`` and the last, over the time between them.
    None when fewer than two records lie in that window."""
    window = [r for r in records if r.get("time") is not None and r["time"] >= skip_s]
    if len(window) < 2 or window[-1]["time"] <= window[0]["time"]:
        return None
    a, b = window[0], window[-1]
    steps, seconds = b["step"] - a["step"], b["time"] - a["time"]
    return {"steps_per_s": steps / seconds, "from_step": a["step"], "to_step": b["step"],
            "seconds": seconds, "skip_s": skip_s, "total_steps": records[-1]["step"],
            "total_s": records[-1]["time"]}


# ---------------------------------------------------------------------- CIFAR-10 format
CIFAR_DIR = "cifar-10-batches-py"


def write_random_cifar10(root, n_per_batch: int = 10_000, seed: int = 0) -> Path:
    """Write random uint8 images and labels in the CIFAR-10 python format (Krizhevsky
    2009: pickled dicts with ``data`` (N, 3072) uint8, R, G and B planes of 32x32, and
    ``labels``), five training batches and a test batch, under ``root/cifar-10-batches-py``,
    so the cifar10 preset's real loading and training path runs where the real files
    cannot be downloaded. The images are noise: fit for timing, not for learning."""
    folder = Path(root) / CIFAR_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"batch_label": f"random {name}",
                 "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n_per_batch).tolist()}
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(entry, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, folder / name)
    return folder


def has_cifar10(root) -> bool:
    """Whether ``root`` holds the five CIFAR-10 training batches."""
    folder = Path(root) / CIFAR_DIR
    return all((folder / f"data_batch_{i}").is_file() for i in range(1, 6))


def has_mnist(root) -> bool:
    """Whether ``root`` holds MNIST's training IDX files (plain or gzipped), where
    :func:`diffusion_tutorial.get_dataset` reads them."""
    raw = Path(root) / "MNIST" / "raw"
    return all((raw / n).is_file() or (raw / f"{n}.gz").is_file()
               for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))


# ---------------------------------------------------------------------- processes
LOG_CAP = 40_000                     # characters of each command's output kept in its log


def run_command(cmd: list, timeout: float, log_path: Path, title: str, env: Optional[dict] = None,
                interrupt_first: bool = False, grace: float = 60.0, cwd: Path = ROOT,
                start_file: Optional[Path] = None, start_limit: float = 180.0) -> dict:
    """Run ``cmd`` in its own process group with a wall-clock limit; append its output (the
    first and last parts of it when long) to ``log_path``. With ``start_file`` the limit
    counts from the moment that file appears (a training run's loss log: start-up is not
    training time), after at most ``start_limit`` seconds. At the limit the process gets
    SIGINT when ``interrupt_first`` (Ctrl-C: the training CLI saves a checkpoint and
    stops), else its group gets SIGTERM; after ``grace`` seconds more the group is killed.
    Returns the exit code, whether the limit was reached, the wall time and the output's end."""
    main_thread = threading.current_thread() is threading.main_thread()
    if interrupt_first and main_thread and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # Started in the background, this process ignores Ctrl-C, and so would its children
        # (an ignored signal stays ignored across exec): handle it, so that they get it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                start_new_session=True)
        while (start_file is not None and proc.poll() is None and not Path(start_file).exists()
               and time.monotonic() - t0 < start_limit):
            time.sleep(0.2)
        timed_out = False
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            if interrupt_first:
                proc.send_signal(signal.SIGINT)
            else:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        wall = time.monotonic() - t0
        out.seek(0)
        text = out.read()
    if len(text) > LOG_CAP:
        text = text[:LOG_CAP // 4] + "\n[... output cut ...]\n" + text[-3 * LOG_CAP // 4:]
    with open(log_path, "a") as log:
        log.write(f"\n===== {title}: {shlex.join(map(str, cmd))}\n{text}\n"
                  f"===== exit {rc}{' (time limit)' if timed_out else ''}, {wall:.1f} s\n")
    return {"rc": rc, "timed_out": timed_out, "wall_s": round(wall, 1), "tail": text[-1500:]}


# ---------------------------------------------------------------------- profile shares
def category(name: str) -> str:
    """The category of an op or kernel name (see :data:`CATEGORIES`)."""
    low = name.lower()
    for cat, words in _KEYWORDS:
        if any(w in low for w in words):
            return cat
    return "other"


def _self_device_us(event) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, attr):
            return float(getattr(event, attr))
    return 0.0


def profile_shares(run: Callable[[], None], cuda: bool, top: int = 8) -> dict:
    """Run ``run()`` under torch.profiler and split the time by :data:`CATEGORIES`.

    CPU: self CPU time of every op. CUDA: device time of every kernel; a category gets the
    larger of two lower bounds, the kernels its ops launched (eager ops) and the kernels
    named after it (compiled, fused kernels), and "other" the rest. Returns the shares,
    the total in ms and the ``top`` ops or kernels by time."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        run()
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()
    if cuda:
        kernels = [e for e in events if e.device_type != DeviceType.CPU
                   and not e.key.startswith(("Memcpy", "Memset"))]      # compute only
        total = sum(_self_device_us(e) for e in kernels)
        by_op = {c: 0.0 for c in CATEGORIES}
        by_kernel = {c: 0.0 for c in CATEGORIES}
        for e in events:
            if e.device_type == DeviceType.CPU:
                by_op[category(e.key)] += _self_device_us(e)
        for e in kernels:
            by_kernel[category(e.key)] += _self_device_us(e)
        times = {c: max(by_op[c], by_kernel[c]) for c in CATEGORIES[:-1]}
        listed = sorted(kernels, key=_self_device_us, reverse=True)[:top]
        timer, top_rows = "device (kernel) time", [(e.key, _self_device_us(e)) for e in listed]
    else:
        total = sum(e.self_cpu_time_total for e in events)
        times = {c: 0.0 for c in CATEGORIES[:-1]}
        for e in events:
            c = category(e.key)
            if c != "other":
                times[c] += e.self_cpu_time_total
        listed = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
        timer, top_rows = "CPU time", [(e.key, e.self_cpu_time_total) for e in listed]
    named = sum(times.values())
    scale = total / named if named > total > 0 else 1.0     # never more than the whole
    shares = {c: (times[c] / scale / total if total else 0.0) for c in CATEGORIES[:-1]}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return {"timer": timer, "total_ms": total / 1e3, "shares": shares,
            "top": [{"name": n[:120], "ms": us / 1e3, "category": category(n)} for n, us in top_rows]}


def bound_text(profile: dict) -> str:
    """One sentence: the measured shares, and what the largest named category bounds
    (Amdahl's law: if everything else cost nothing, the step would be 1/share faster)."""
    s = profile["shares"]
    big = max(CATEGORIES[:-1], key=lambda c: s[c])
    return (f"shares of the {profile['timer']}: convolution {s['convolution']:.0%}, normalization "
            f"{s['normalization']:.0%}, attention {s['attention']:.0%}, other {s['other']:.0%}; "
            f"{big} bounds the step: with everything else free it would be at most "
            f"{1 / max(s[big], 1e-9):.2f}x faster")
