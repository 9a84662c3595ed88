"""Export a training run's EMA weights as a shipped pretrained model.

Reads the run folder written by ``python -m diffusion_tutorial train``, writes

    diffusion_tutorial/pretrained/<name>.safetensors   EMA weights, float16
    diffusion_tutorial/pretrained/<name>.json          settings, command, metrics, sha256
    diffusion_tutorial/pretrained/<name>_samples.png   a grid of samples (the first sampler)

and measures the shipped (float16-rounded) weights with the classifier metrics, so the
numbers in the JSON describe exactly what ``load_pretrained`` returns. Samples are drawn as
the command line draws them (``sample_images``: seed 0, x̂_0 clipped to [−1, 1]).

    python scripts/export_pretrained.py runs/pretrained-mnist --name mnist \
        --command "python -m diffusion_tutorial train ..." [--n-eval 1000] \
        [--eval dpm++2m-sde:20,ddim:50:1,ddim:50:0]

A class-conditional run (``train --class-conditional``) is measured by its guidance sweep
instead (``--guidance-scales``, ``--n-per-class``; see ``diffusion_tutorial.guidance``).

After the metrics classifier changes, ``--remeasure`` recomputes only the metrics of the
weights already shipped (they and their checksum stay as they are):

    python scripts/export_pretrained.py --remeasure --name mnist

``--attach-table`` stores a ``benchmarks/bench_quality_vs_steps.py`` result measured on the
shipped weights (its SHA-256 must match) in the JSON as ``sampler_table``, the table the
chapters show:

    python scripts/export_pretrained.py --attach-table benchmarks/results/quality_vs_steps.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffusion_tutorial.config import TrainConfig
from diffusion_tutorial.guidance import sweep_report
from diffusion_tutorial.metrics import evaluate_samples
from diffusion_tutorial.pretrained import PRETRAINED_DIR, load_pretrained, sha256_file
from diffusion_tutorial.runs import load_run, sample_images, save_samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?", help="the training run to export (not with --remeasure)")
    p.add_argument("--remeasure", action="store_true",
                   help="only recompute the metrics of the shipped weights")
    p.add_argument("--name", default="mnist")
    p.add_argument("--command", help="the exact training command of the run (required to export)")
    p.add_argument("--note", default="", help="how the run ended, on what machine")
    p.add_argument("--out", default=str(PRETRAINED_DIR))
    p.add_argument("--n-eval", type=int, default=1000, help="samples for the metrics")
    p.add_argument("--eval", default="dpm++2m-sde:20,ddim:50:1,ddim:50:0",
                   help="comma-separated SAMPLER:STEPS[:ETA] to measure; the first gives the "
                        "headline metrics and the PNG")
    p.add_argument("--attach-table", help="a quality_vs_steps result to store as sampler_table")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--guidance-scales", default="0,1,3,5,8",
                   help="class-conditional models only: the guidance scales w of the sweep")
    p.add_argument("--n-per-class", type=int, default=100,
                   help="class-conditional models only: samples per class and guidance scale")
    args = p.parse_args()
    out = Path(args.out)
    if args.attach_table:
        return attach_table(Path(args.attach_table), out / f"{args.name}.json")
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
                      "beta_end": config.beta_end, "prediction": config.prediction},
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
    with every ``--eval`` setting as the command line would, and store the metrics (and
    the first setting's grid) next to the weights."""
    model, diffusion, _ = load_pretrained(args.name, device="cpu", directory=out)
    if info["model"].get("num_classes"):
        return measure_conditional(info, args, out, model, diffusion)
    config = TrainConfig.from_dict(info["config"])
    by_sampler = []
    for spec in [s for s in args.eval.split(",") if s]:
        sampler, steps, eta = (spec.split(":") + ["0"])[:3]
        steps = int(steps) if steps else None
        t0 = time.perf_counter()
        x = sample_images(model, diffusion, config, args.n_eval, sampler=sampler, steps=steps,
                          eta=float(eta), seed=0)
        seconds = time.perf_counter() - t0
        metrics = evaluate_samples(x)
        metrics.update(sampler=f"{sampler}, {steps or diffusion.num_timesteps} steps"
                       + (f", eta={float(eta):g}" if sampler == "ddim" else ""), seed=0,
                       settings={"sampler": sampler, "steps": steps or diffusion.num_timesteps,
                                 "eta": float(eta)},
                       sampling_seconds=round(seconds, 1))
        by_sampler.append(metrics)
        print(json.dumps({k: metrics[k] for k in ("sampler", "fid", "fid_floor", "confident_share",
                                                  "class_entropy")}), flush=True)
        if len(by_sampler) == 1:
            save_samples(x[:64], out / f"{args.name}_samples.png", nrow=8)
    info["metrics"] = by_sampler[0]
    info["metrics_other_samplers"] = by_sampler[1:]
    (out / f"{args.name}.json").write_text(json.dumps(info, indent=2) + "\n")


def attach_table(result_path: Path, info_path: Path) -> None:
    """Store the rows of a quality-vs-steps result in the model JSON as ``sampler_table``,
    after checking that they were measured on these very weights."""
    result, info = json.loads(result_path.read_text()), json.loads(info_path.read_text())
    if result.get("model", {}).get("sha256") != info["sha256"]:
        raise SystemExit(f"{result_path} was measured on other weights (sha256 "
                         f"{result.get('model', {}).get('sha256', '?')[:16]}..., shipped "
                         f"{info['sha256'][:16]}...): rerun the benchmark.")
    m = result["machine"]
    info["sampler_table"] = {
        "rows": [{k: r[k] for k in ("sampler", "eta", "steps", "evaluations", "n", "seed", "fid",
                                    "fid_floor", "confident_share", "confident_share_real",
                                    "class_entropy", "ms_per_sample")} for r in result["rows"]],
        "measured_on": f"Measured {result['date'][:10]} with `{result['command']}` on a "
                       f"{m.get('cores')}-core {m.get('cpu')} ({m.get('torch_threads')} torch threads); "
                       "every sampler starts from the same x_T and clips x̂_0 to [−1, 1].",
        "few_steps_vs_ddpm1000": result.get("few_steps_vs_ddpm1000")}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    print(f"attached {len(result['rows'])} rows to {info_path}")


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
