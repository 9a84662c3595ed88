"""Export a training run's EMA weights as a shipped pretrained model.

Reads the run folder written by ``python -m diffusion_tutorial train``, writes

    diffusion_tutorial/pretrained/<name>.safetensors   EMA weights, float16
    diffusion_tutorial/pretrained/<name>.json          settings, command, metrics, sha256
    diffusion_tutorial/pretrained/<name>_samples.png   a grid of DDIM samples

and measures the shipped (float16-rounded) weights with the classifier metrics, so the
numbers in the JSON describe exactly what ``load_pretrained`` returns.

    python scripts/export_pretrained.py runs/pretrained-mnist --name mnist \
        --command "python -m diffusion_tutorial train --preset quick ..." [--n-eval 500] \
        [--eval-steps 100,50 --eval-etas 1,0]

A class-conditional run (``train --class-conditional``) is measured by its guidance sweep
instead (``--guidance-scales``, ``--n-per-class``; see ``diffusion_tutorial.guidance``).

After the metrics classifier changes, ``--remeasure`` recomputes only the metrics of the
weights already shipped (they and their checksum stay as they are):

    python scripts/export_pretrained.py --remeasure --name mnist
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffusion_tutorial import ddim_sample, set_seed
from diffusion_tutorial.guidance import sweep_report
from diffusion_tutorial.metrics import evaluate_samples
from diffusion_tutorial.pretrained import PRETRAINED_DIR, load_pretrained, sha256_file
from diffusion_tutorial.train import load_run, save_samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?", help="the training run to export (not with --remeasure)")
    p.add_argument("--remeasure", action="store_true",
                   help="only recompute the metrics of the shipped weights")
    p.add_argument("--name", default="mnist")
    p.add_argument("--command", help="the exact training command of the run (required to export)")
    p.add_argument("--note", default="", help="how the run ended, on what machine")
    p.add_argument("--out", default=str(PRETRAINED_DIR))
    p.add_argument("--n-eval", type=int, default=500, help="samples for the metrics")
    p.add_argument("--eval-steps", default="100,50",
                   help="DDIM step counts to measure (comma-separated)")
    p.add_argument("--eval-etas", default="1,0",
                   help="DDIM eta values to measure with each step count; the first step count "
                        "with the first eta gives the headline metrics and the PNG")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--guidance-scales", default="0,1,3,5,8",
                   help="class-conditional models only: the guidance scales w of the sweep")
    p.add_argument("--n-per-class", type=int, default=100,
                   help="class-conditional models only: samples per class and guidance scale")
    args = p.parse_args()
    out = Path(args.out)
    if args.remeasure:
        info = json.loads((out / f"{args.name}.json").read_text())
        return measure(info, args, out)
    if not args.run_dir or not args.command:
        p.error("exporting needs run_dir and --command (or use --remeasure)")

    config, ema_model, diffusion = load_run(args.run_dir, device="cpu")
    log = [json.loads(line) for line in (Path(args.run_dir) / "loss_log.jsonl").read_text().splitlines() if line]
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{args.name}.safetensors"
    dtype = getattr(torch, args.dtype)
    save_file({k: v.detach().to("cpu", dtype).contiguous() for k, v in ema_model.state_dict().items()},
              str(weights))
    tail = [r["loss"] for r in log[-200:]]
    info = {
        "name": args.name,
        "weights": weights.name,
        "dtype": args.dtype,
        "sha256": sha256_file(weights),
        "model": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.model_kwargs().items()},
        "diffusion": {"schedule": config.schedule, "timesteps": config.timesteps,
                      "variance": config.variance, "beta_start": config.beta_start,
                      "beta_end": config.beta_end},
        "parameters": sum(v.numel() for v in ema_model.state_dict().values()),
        "command": args.command,
        "note": args.note,
        "training": {"steps": log[-1]["step"] if log else None,
                     "train_seconds": log[-1].get("time") if log else None,
                     "final_loss_mean_last_200": sum(tail) / len(tail) if tail else None,
                     "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads"},
        "config": config.to_dict(),
    }
    (out / f"{args.name}.json").write_text(json.dumps(info, indent=2) + "\n")
    measure(info, args, out)


def measure(info: dict, args, out: Path) -> None:
    """Measure what ships: reload through load_pretrained (checks the checksum too), sample
    with every (DDIM steps, eta) pair, and store the metrics (and the first pair's grid)
    next to the weights."""
    model, diffusion, _ = load_pretrained(args.name, device="cpu", directory=out)
    if info["model"].get("num_classes"):
        return measure_conditional(info, args, out, model, diffusion)
    by_sampler = []
    settings = [(int(steps), float(eta)) for steps in str(args.eval_steps).split(",")
                for eta in args.eval_etas.split(",")]
    for steps, eta in settings:
        t0 = time.perf_counter()
        x = ddim_sample(diffusion, model, (args.n_eval, 1, 28, 28), steps=steps, eta=eta,
                        generator=set_seed(0), progress=False)
        seconds = time.perf_counter() - t0
        metrics = evaluate_samples(x)
        metrics.update(sampler=f"ddim, {steps} steps, eta={eta:g}", seed=0,
                       sampling_seconds=round(seconds, 1))
        by_sampler.append(metrics)
        if len(by_sampler) == 1:
            save_samples(x[:64], out / f"{args.name}_samples.png", nrow=8)
    info["metrics"] = by_sampler[0]
    info["metrics_other_samplers"] = by_sampler[1:]
    (out / f"{args.name}.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(by_sampler, indent=2))


def measure_conditional(info: dict, args, out: Path, model, diffusion) -> None:
    """A class-conditional model: the guidance sweep (every class at each scale, from the same
    noise) as ``guidance_sweep`` in the JSON; its w = 1 row is the headline ``metrics``."""
    scales = [float(w) for w in args.guidance_scales.split(",")]
    info["guidance_sweep"], grid = sweep_report(model, diffusion, scales, args.n_per_class)
    info["metrics"] = next(row for row in info["guidance_sweep"]["rows"] if row["w"] == 1.0)
    save_samples(grid, out / f"{args.name}_samples.png", nrow=len(grid) // model.num_classes)
    (out / f"{args.name}.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info["guidance_sweep"], indent=2))


if __name__ == "__main__":
    main()
