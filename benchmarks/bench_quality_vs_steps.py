"""Sample quality against the number of sampling steps, for every sampler of the package.

Ancestral DDPM sampling with all T = 1000 steps against DDIM (Song et al. 2021, η = 0 and
η = 1), DPM-Solver++(2M) and its SDE variant (Lu et al. 2022) and Heun's method on the
probability-flow ODE (Karras et al. 2022), each at a budget of 10/20/50/100 network
evaluations (Heun takes two per step, so it runs budget/2 steps). For each: the
classifier-FID (with its real-vs-real floor at the same sample count), the confident share,
the class entropy, and the wall time per sample. Sampling clips x̂_0 to [−1, 1], as the
command line does.

    python benchmarks/bench_quality_vs_steps.py [--n 1000] [--steps 10,20,50,100] \
        [--samplers ddim:0,ddim:1,dpm++2m,dpm++2m-sde,heun] [--run runs/quick]

    # how much a single FID at this n moves with the starting noise (4 seeds):
    python benchmarks/bench_quality_vs_steps.py --steps 20 --samplers dpm++2m-sde --n-ddpm 0 \
        --seeds 0,1,2,3 --result-name quality_vs_steps_seeds

All samplers start from the same x_T (seeded) and use the same number of samples, so
differences come from the sampler. The FID is biased upwards at small n: compare rows with
each other and with the floor, not with published FIDs. The summary compares each sampler's
best row at <= 20 evaluations with DDPM-1000.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import add_note_option, machine, print_table, write_result
from diffusion_tutorial import load_pretrained, sample
from diffusion_tutorial.metrics import evaluate_samples
from diffusion_tutorial.ode_samplers import evaluations

NAMES = {"ddim": "DDIM", "dpm++2m": "DPM-Solver++(2M)", "dpm++2m-sde": "SDE-DPM-Solver++(2M)",
         "heun": "Heun", "ddpm": "DDPM"}


def load_model(args):
    """(model, diffusion, description) of the shipped model or of a run folder."""
    if args.run:
        from diffusion_tutorial.train import load_run
        config, model, diffusion = load_run(args.run, device=args.device)
        return model, diffusion, {"run": args.run, "config": config.to_dict()}
    model, diffusion, info = load_pretrained("mnist", device=args.device)
    return model, diffusion, {"name": "mnist", "command": info["command"], "sha256": info["sha256"],
                              "steps_trained": info.get("training", {}).get("steps")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="samples per setting")
    p.add_argument("--n-ddpm", type=int, default=None,
                   help="samples for DDPM-1000 (default: --n; 0 skips it)")
    p.add_argument("--steps", default="10,20,50,100", help="network-evaluation budgets")
    p.add_argument("--samplers", default="ddim:0,ddim:1,dpm++2m,dpm++2m-sde,heun",
                   help="comma-separated; ddim:ETA for DDIM")
    p.add_argument("--seeds", default="0",
                   help="seeds of x_T; with several, every setting runs once per seed and the "
                        "spread (mean, std) of each metric is reported")
    p.add_argument("--run", default=None, help="a training run folder instead of the shipped model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--result-name", default="quality_vs_steps")
    p.add_argument("--out-dir", default=None)
    add_note_option(p)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, diffusion, model_info = load_model(args)
    T = diffusion.num_timesteps
    args.n_ddpm = args.n if args.n_ddpm is None else args.n_ddpm
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []

    def run(sampler, steps, eta, n):
        for seed in seeds:  # x_T from stream 2·seed, the sampler's noise from 2·seed + 1
            x_T = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(2 * seed))
            g = torch.Generator().manual_seed(2 * seed + 1)
            t0 = time.perf_counter()
            x = sample(diffusion, model, x_T.shape, sampler=sampler, steps=steps, eta=eta,
                       x_T=x_T.to(args.device), generator=g, clip_denoised=True, progress=False).cpu()
            seconds = time.perf_counter() - t0
            m = evaluate_samples(x)
            row = {"sampler": NAMES[sampler], "eta": eta if sampler == "ddim" else "",
                   "steps": steps or T, "evaluations": evaluations(sampler, steps or T, T), "n": n,
                   "seed": seed, "fid": m["fid"], "fid_floor": m["fid_floor"],
                   "confident_share": m["confident_share"],
                   "confident_share_real": m["confident_share_real"],
                   "class_entropy": m["class_entropy"], "seconds": seconds,
                   "ms_per_sample": 1e3 * seconds / n}
            rows.append(row)
            print_table([row], list(row))

    for budget in [int(s) for s in args.steps.split(",") if s]:
        for spec in [s for s in args.samplers.split(",") if s]:
            name, _, eta = spec.partition(":")
            steps = (budget + 1) // 2 if name == "heun" else budget
            run(name, steps, float(eta or 0), args.n)
    if args.n_ddpm:
        run("ddpm", None, 0.0, args.n_ddpm)
    print()
    print_table(rows, ["sampler", "eta", "steps", "evaluations", "n", "seed", "fid", "fid_floor",
                       "confident_share", "class_entropy", "ms_per_sample"])
    summary = few_steps_vs_ddpm([r for r in rows if r["seed"] == seeds[0]])
    if summary:
        print(summary["text"])
    spread = seed_spread(rows) if len(seeds) > 1 else None
    if spread:
        print_table(spread, list(spread[0]))
    write_result(args.result_name, {
        "machine": machine(args.device, args.note), "model": model_info, "clip_denoised": True,
        "rows": rows, "few_steps_vs_ddpm1000": summary, "seed_spread": spread}, args.out_dir)


def seed_spread(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of each setting's FID and confident share."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["sampler"], r["steps"], r["eta"], r["n"]), []).append(r)
    out = []
    for (sampler, steps, eta, n), rs in groups.items():
        fid = [r["fid"] for r in rs]
        conf = [r["confident_share"] for r in rs]
        out.append({"sampler": sampler, "steps": steps, "eta": eta, "n": n, "seeds": len(rs),
                    "fid_mean": statistics.mean(fid), "fid_std": statistics.stdev(fid),
                    "confident_share_mean": statistics.mean(conf),
                    "confident_share_std": statistics.stdev(conf)})
    return out


def label(row: dict) -> str:
    """'DDIM-20 (eta=1)', 'Heun-10', ... for a result row."""
    eta = "" if row["eta"] == "" else f" (eta={row['eta']:g})"
    return f"{row['sampler']}-{row['steps']}{eta}"


def few_steps_vs_ddpm(rows: list[dict], budget: int = 20):
    """Each sampler's lowest-FID row with at most ``budget`` network evaluations against
    DDPM-1000: FID ratio and the ratio of evaluations, if both were measured."""
    ddpm = next((r for r in rows if r["sampler"] == "DDPM"), None)
    if not ddpm:
        return None
    best = {}
    for r in rows:
        key = (r["sampler"], r["eta"])
        if r["sampler"] != "DDPM" and r["evaluations"] <= budget and (
                key not in best or r["fid"] < best[key]["fid"]):
            best[key] = r
    out = [{"sampler": r["sampler"], "eta": r["eta"], "steps": r["steps"],
            "evaluations": r["evaluations"], "fid": r["fid"], "fid_ratio": r["fid"] / ddpm["fid"],
            "confident_share": r["confident_share"],
            "evaluations_ratio": ddpm["evaluations"] / r["evaluations"]} for r in best.values()]
    out.sort(key=lambda o: o["fid_ratio"])
    text = "; ".join(f"{label(o)}: FID {o['fid_ratio']:.2f}x DDPM-1000's "
                     f"({o['evaluations']} evaluations, {o['evaluations_ratio']:.0f}x fewer)" for o in out)
    return {"budget": budget, "ddpm_fid": ddpm["fid"], "rows": out, "text": text}


if __name__ == "__main__":
    main()
