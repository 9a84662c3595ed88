"""Time to quality: how many training minutes until samples read as digits?

A training run (``python -m diffusion_tutorial train``) keeps only its latest checkpoint,
so this script works in two phases:

    # 1. while the run trains: copy each new EMA checkpoint, with its step and time
    python benchmarks/bench_time_to_quality.py watch runs/quick
    # 2. afterwards: sample every snapshot, measure confident share / class entropy / FID
    python benchmarks/bench_time_to_quality.py evaluate runs/quick [--n 100 --steps 50 --eta 1]

``evaluate`` reports, per snapshot, the training step, the training wall time (from the
run's ``loss_log.jsonl``) and the metrics, and the first time at which the confident
share reached the target (default 0.8). Sampling uses DDIM (50 steps, η = 1 by default)
to keep the evaluation cheap.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from _common import add_note_option, machine, print_table, write_result


def checkpoint_step(ckpt: Path) -> int:
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    return int(state["step"])


def watch(run_dir: Path, poll: float, stop_after: float) -> None:
    """Copy ``checkpoint/ema.safetensors`` to ``ema_history/step_XXXXXX.safetensors``
    each time the run saves a new checkpoint; stop when the run has finished (its
    ``samples.png`` exists) or after ``stop_after`` seconds without a new checkpoint."""
    history = run_dir / "ema_history"
    history.mkdir(parents=True, exist_ok=True)
    last_new = time.time()
    seen = set()
    while time.time() - last_new < stop_after:
        ckpt = run_dir / "checkpoint"
        try:
            step = checkpoint_step(ckpt)
            if step not in seen:
                tmp = history / f".step_{step:06d}.tmp"
                shutil.copy(ckpt / "ema.safetensors", tmp)
                tmp.rename(history / f"step_{step:06d}.safetensors")
                seen.add(step)
                last_new = time.time()
                print(f"snapshot step {step}", flush=True)
        except (FileNotFoundError, OSError, RuntimeError, KeyError):
            pass  # no checkpoint yet, or one being replaced: try again
        if (run_dir / "samples.png").exists() and seen:
            break
        time.sleep(poll)


def step_times(run_dir: Path) -> dict:
    """step -> training seconds, from the run's loss log."""
    times = {}
    for line in (run_dir / "loss_log.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            times[int(r["step"])] = float(r.get("time", float("nan")))
    return times


def evaluate(run_dir: Path, n: int, steps: int, target: float, every: int, eta: float) -> dict:
    from safetensors.torch import load_file
    from diffusion_tutorial import ddim_sample, set_seed
    from diffusion_tutorial.metrics import evaluate_samples
    from diffusion_tutorial.train import load_run
    config, model, diffusion = load_run(run_dir, device="cpu")
    times = step_times(run_dir)
    snaps = sorted((run_dir / "ema_history").glob("step_*.safetensors"))
    rows = []
    for path in snaps:
        step = int(path.stem.split("_")[1])
        if every and step % every:
            continue
        model.load_state_dict(load_file(str(path)))
        x = ddim_sample(diffusion, model.eval(), (n, 1, 28, 28), steps=steps, eta=eta,
                        generator=set_seed(0), progress=False)
        m = evaluate_samples(x)
        row = {"step": step, "train_minutes": times.get(step, float("nan")) / 60,
               "confident_share": m["confident_share"],
               "confident_share_real": m["confident_share_real"], "class_entropy": m["class_entropy"],
               "fid": m["fid"], "fid_floor": m["fid_floor"]}
        rows.append(row)
        print_table([row], list(row))
    reached = next((r for r in rows if r["confident_share"] >= target), None)
    return {"rows": rows, "target_confident_share": target,
            "first_reached": reached, "n": n, "ddim_steps": steps, "eta": eta,
            "run": {"preset": config.preset, "batch_size": config.batch_size,
                    "steps_logged": max(times) if times else 0}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["watch", "evaluate"])
    p.add_argument("run_dir")
    p.add_argument("--poll", type=float, default=10.0)
    p.add_argument("--stop-after", type=float, default=1800.0, help="watch: idle seconds before giving up")
    p.add_argument("--n", type=int, default=100, help="samples per snapshot")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps per sample")
    p.add_argument("--every", type=int, default=0, help="only snapshots whose step is a multiple")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta (1: stochastic)")
    p.add_argument("--target", type=float, default=0.8)
    p.add_argument("--result-name", default="time_to_quality",
                   help="result file name (several runs can be compared on the page)")
    p.add_argument("--title", default="", help="a heading for this run on the page")
    p.add_argument("--training-note", default="",
                   help="how the run was trained (command, machine, its load), shown with the table")
    p.add_argument("--out-dir", default=None)
    add_note_option(p)
    args = p.parse_args()
    run_dir = Path(args.run_dir)
    if args.mode == "watch":
        return watch(run_dir, args.poll, args.stop_after)
    result = evaluate(run_dir, args.n, args.steps, args.target, args.every, args.eta)
    print_table(result["rows"], ["step", "train_minutes", "confident_share", "class_entropy", "fid", "fid_floor"])
    r = result["first_reached"]
    print(f"confident share >= {args.target}: " +
          (f"step {r['step']}, {r['train_minutes']:.1f} training minutes" if r else "not reached in this run"))
    write_result(args.result_name, {"machine": machine("cpu", args.note),
                                     "title": args.title, "training_note": args.training_note,
                                     **result}, args.out_dir)


if __name__ == "__main__":
    main()
