"""Training recipes compared by quality against training steps (time-to-quality curves).

Each recipe is the default ``python -m diffusion_tutorial train`` with some flags changed.
``train`` runs it with one torch thread, copies the EMA weights at every checkpoint, and
records the command; ``evaluate`` samples every snapshot (n = 500 by default) and scores it
with the package classifier; ``cost`` measures the per-step cost of recipes relative to
each other, alternating between them in one process so that machine load affects all alike.

    python benchmarks/bench_recipes.py train base-s0 -- --seed 0 --steps 3000
    python benchmarks/bench_recipes.py evaluate base-s0 --sampler ddim --steps 50 --eta 1
    python benchmarks/bench_recipes.py cost base="" v-minsnr="--prediction v --loss-weighting min_snr"

Quality is measured against *steps*, which do not depend on the machine's load; minutes
follow from the steps per second of the default run on an idle machine and the cost ratios.
Results go to ``benchmarks/results/recipes/<name>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from _common import RESULTS_DIR, add_note_option, machine, print_table, write_result
from bench_time_to_quality import step_times, watch

RUNS = Path("runs") / "recipes"
OUT_DIR = RESULTS_DIR / "recipes"


def train(name: str, flags: list[str], every: int) -> None:
    """Run the CLI with ``flags`` (one thread, no grids, a checkpoint every ``every``
    steps) while a thread copies each checkpoint's EMA weights."""
    run_dir = (RUNS / name).resolve()
    cmd = [sys.executable, "-m", "diffusion_tutorial", "train", "--out", str(run_dir),
           "--no-progress", "--sample-every", "0", "--checkpoint-every", str(every), *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.json").write_text(json.dumps(
        {"name": name, "flags": flags, "command": "python -m diffusion_tutorial train " + " ".join(
            shlex.quote(f) for f in flags), "checkpoint_every": every}, indent=2))
    watcher = threading.Thread(target=watch, args=(run_dir, 5.0, 3600.0), daemon=True)
    watcher.start()
    t0 = time.time()
    # cwd: the run folder, so that `-m` imports the package from PYTHONPATH (a frozen copy
    # while the working tree changes), not from the current directory
    rc = subprocess.call(cmd, env=env, cwd=run_dir)
    watcher.join(timeout=60)
    print(f"{name}: exit {rc} after {(time.time() - t0) / 60:.1f} min", flush=True)


def evaluate(name: str, n: int, sampler: str, steps: int, eta: float, every: int,
             seeds: list[int], note: str, at: list[int]) -> None:
    """Sample the EMA snapshots of run ``name`` (every ``every`` steps, or those ``at``) and
    write its time-to-quality rows, keeping rows already measured with the same settings."""
    from safetensors.torch import load_file
    from diffusion_tutorial.metrics import evaluate_samples
    from diffusion_tutorial.train import load_run, sample_images
    run_dir = RUNS / name
    recipe = json.loads((run_dir / "recipe.json").read_text())
    config, model, diffusion = load_run(run_dir, device="cpu")
    times = step_times(run_dir)
    settings = {"n": n, "sampler": sampler, "steps": steps, "eta": eta, "sample_seeds": seeds,
                "clip_denoised": True}
    old_path = OUT_DIR / f"{name}.json"
    old = json.loads(old_path.read_text()) if old_path.exists() else {}
    rows = old.get("rows", []) if old.get("evaluation") == settings else []
    done = {(r["step"], r["seed"]) for r in rows}
    for path in sorted((run_dir / "ema_history").glob("step_*.safetensors")):
        step = int(path.stem.split("_")[1])
        if (at and step not in at) or (not at and every and step % every):
            continue
        model.load_state_dict(load_file(str(path)))
        for seed in [s for s in seeds if (step, s) not in done]:
            x = sample_images(model.eval(), diffusion, config, n, sampler=sampler, steps=steps,
                              eta=eta, seed=seed)
            m = evaluate_samples(x)
            row = {"step": step, "seed": seed, "confident_share": m["confident_share"],
                   "class_entropy": m["class_entropy"], "fid": m["fid"], "fid_floor": m["fid_floor"],
                   "confident_share_real": m["confident_share_real"],
                   "logged_minutes": times.get(step, float("nan")) / 60}
            rows.append(row)
            print_table([row], list(row))
    rows.sort(key=lambda r: (r["step"], r["seed"]))
    write_result(name, {
        "machine": machine("cpu", note), "recipe": recipe["command"],
        "training_seed": config.seed, "steps_trained": max(times) if times else 0,
        "evaluation": settings, "config": config.to_dict(), "rows": rows}, OUT_DIR)


def cost(recipes: dict[str, list[str]], steps: int, rounds: int, threads: int, note: str) -> None:
    """Seconds per training step of each recipe, alternating ``rounds`` times between them
    (``steps`` steps each time, after a warm-up); reports the ratio to the first."""
    import statistics
    from diffusion_tutorial.cli import build_parser
    from diffusion_tutorial.config import TrainConfig, get_config
    from diffusion_tutorial.data import get_dataset, infinite_batches
    from diffusion_tutorial.ema import EMA
    torch.set_num_threads(threads)
    parser = build_parser()
    data = get_dataset("mnist-sample", "data", train=True)
    setups = {}
    for name, flags in recipes.items():
        args = parser.parse_args(["train", *flags])
        overrides = {f: getattr(args, f) for f in TrainConfig.__dataclass_fields__
                     if f not in ("run_dir", "preset") and hasattr(args, f)}
        config = get_config("quick", **overrides)
        torch.manual_seed(0)
        model, diffusion = config.build_model(), config.build_diffusion()
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
        loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, shuffle=True,
                                             drop_last=True)
        ema = EMA(model, config.ema_decay)
        setups[name] = (model, diffusion, opt, iter(infinite_batches(loader)), config, ema)

    def run(name: str, k: int) -> float:
        """Seconds per step: forward, backward, clipping, AdamW, EMA (no logging or I/O)."""
        model, diffusion, opt, batches, config, ema = setups[name]
        t0 = time.perf_counter()
        for _ in range(k):
            x, _ = next(batches)
            loss = diffusion.p_losses(model, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            ema.update(model)
        return (time.perf_counter() - t0) / k

    for name in setups:
        run(name, 3)
    times = {name: [] for name in setups}
    for _ in range(rounds):
        for name in setups:
            times[name].append(run(name, steps))
    base = statistics.median(times[next(iter(setups))])
    rows = [{"recipe": name, "flags": " ".join(recipes[name]), "batch": setups[name][4].batch_size,
             "parameters": setups[name][4].count_parameters(),
             "s_per_step_median": statistics.median(t), "s_per_step_min": min(t),
             "cost_ratio": statistics.median(t) / base} for name, t in times.items()]
    print_table(rows, list(rows[0]))
    write_result("recipe_step_cost", {"machine": machine("cpu", note), "threads": threads,
                                      "steps_per_round": steps, "rounds": rounds, "rows": rows})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("name")
    tr.add_argument("--every", type=int, default=250, help="checkpoint (snapshot) every N steps")
    tr.epilog = "flags for `python -m diffusion_tutorial train` follow a lone --"
    ev = sub.add_parser("evaluate")
    ev.add_argument("name")
    ev.add_argument("--n", type=int, default=500)
    ev.add_argument("--sampler", default="dpm++2m-sde")
    ev.add_argument("--steps", type=int, default=20)
    ev.add_argument("--eta", type=float, default=0.0)
    ev.add_argument("--every", type=int, default=500)
    ev.add_argument("--seeds", default="0")
    ev.add_argument("--at", default="", help="only these snapshot steps (comma-separated)")
    add_note_option(ev)
    co = sub.add_parser("cost")
    co.add_argument("recipes", nargs="+", help='name="flags" pairs; the first is the reference')
    co.add_argument("--steps", type=int, default=10)
    co.add_argument("--rounds", type=int, default=5)
    co.add_argument("--threads", type=int, default=2)
    add_note_option(co)
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.mode == "train":
        return train(args.name, flags, args.every)
    if args.mode == "evaluate":
        torch.set_num_threads(1)
        return evaluate(args.name, args.n, args.sampler, args.steps, args.eta, args.every,
                        [int(s) for s in args.seeds.split(",")], args.note,
                        [int(s) for s in args.at.split(",") if s])
    recipes = {}
    for item in args.recipes:
        name, _, flags = item.partition("=")
        recipes[name] = shlex.split(flags)
    cost(recipes, args.steps, args.rounds, args.threads, args.note)


if __name__ == "__main__":
    main()
