"""Sample quality against the number of sampling steps, with the shipped MNIST model.

Ancestral DDPM sampling with all T = 1000 steps against DDIM (Song et al. 2021) with
10/20/50/100/250 steps, deterministic (η = 0) and stochastic (η = 1). For each: the
classifier-FID (with its real-vs-real floor at the same sample count), the confident
share, the class entropy, and the wall time per sample.

    python benchmarks/bench_quality_vs_steps.py [--n 256] [--steps 10,20,50,100,250]

    # how much a single FID at this n moves with the starting noise (DDIM-50, 4 seeds):
    python benchmarks/bench_quality_vs_steps.py --steps 50 --etas 1 --n-ddpm 0 \
        --seeds 0,1,2,3 --result-name quality_vs_steps_seeds

All samplers start from the same x_T (seeded) and use the same number of samples, so
differences come from the sampler. On a CPU the sample count is small, which makes the
FID noisy and biased upwards: compare rows with each other and with the floor (the
real-vs-real FID at the same n), not with published FIDs. The summary line compares
DDIM-50 with DDPM-1000.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import add_note_option, machine, print_table, write_result
from diffusion_tutorial import ddim_sample, ddpm_sample, load_pretrained
from diffusion_tutorial.metrics import evaluate_samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256, help="samples per setting")
    p.add_argument("--n-ddpm", type=int, default=None,
                   help="samples for DDPM-1000 (default: --n; 0 skips it)")
    p.add_argument("--steps", default="10,20,50,100,250")
    p.add_argument("--etas", default="0,1")
    p.add_argument("--seeds", default="0",
                   help="seeds of x_T; with several, every setting runs once per seed and the "
                        "spread (mean, std) of each metric is reported")
    p.add_argument("--device", default="cpu")
    p.add_argument("--result-name", default="quality_vs_steps")
    p.add_argument("--out-dir", default=None)
    add_note_option(p)
    args = p.parse_args()
    model, diffusion, info = load_pretrained("mnist", device=args.device)
    args.n_ddpm = args.n if args.n_ddpm is None else args.n_ddpm
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []

    def run(name, fn, n, steps, eta):
        for seed in seeds:  # x_T from stream 2·seed, the sampler's noise from 2·seed + 1
            x_T = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(2 * seed))
            run_once(name, fn, n, steps, eta, seed, x_T)

    def run_once(name, fn, n, steps, eta, seed, x_T):
        g = torch.Generator().manual_seed(2 * seed + 1)
        t0 = time.perf_counter()
        x = fn(x_T.to(args.device), g).cpu()
        seconds = time.perf_counter() - t0
        m = evaluate_samples(x)
        row = {"sampler": name, "steps": steps, "eta": eta, "n": n, "seed": seed, "fid": m["fid"],
               "fid_floor": m["fid_floor"], "confident_share": m["confident_share"],
               "confident_share_real": m["confident_share_real"],
               "class_entropy": m["class_entropy"], "seconds": seconds,
               "ms_per_sample": 1e3 * seconds / n}
        rows.append(row)
        print_table([row], list(row))

    for steps in [int(s) for s in args.steps.split(",") if s]:
        for eta in [float(e) for e in args.etas.split(",") if e]:
            run("DDIM", lambda x, g, s=steps, e=eta: ddim_sample(
                diffusion, model, x.shape, steps=s, eta=e, x_T=x, generator=g, progress=False),
                args.n, steps, eta)
    if args.n_ddpm:
        run("DDPM", lambda x, g: ddpm_sample(diffusion, model, x.shape, x_T=x, generator=g,
                                             progress=False), args.n_ddpm, diffusion.num_timesteps,
            f"(sigma^2={diffusion.variance})")
    print()
    print_table(rows, ["sampler", "steps", "eta", "n", "seed", "fid", "fid_floor", "confident_share",
                       "confident_share_real", "class_entropy", "ms_per_sample"])
    summary = ddim50_vs_ddpm([r for r in rows if r["seed"] == seeds[0]])
    if summary:
        print(summary["text"])
    spread = seed_spread(rows) if len(seeds) > 1 else None
    if spread:
        print_table(spread, list(spread[0]))
    write_result(args.result_name, {
        "machine": machine(args.device, args.note),
        "model": {"name": "mnist", "command": info["command"],
                  "steps_trained": info.get("training", {}).get("steps")},
        "rows": rows, "ddim50_vs_ddpm1000": summary, "seed_spread": spread}, args.out_dir)


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


def ddim50_vs_ddpm(rows: list[dict]):
    """DDIM-50 (each η) against DDPM-1000: FID ratio and speed-up, if both were measured."""
    ddpm = next((r for r in rows if r["sampler"] == "DDPM"), None)
    ddim = [r for r in rows if r["sampler"] == "DDIM" and r["steps"] == 50]
    if not ddpm or not ddim:
        return None
    out = [{"eta": r["eta"], "fid_ratio": r["fid"] / ddpm["fid"],
            "speedup": ddpm["ms_per_sample"] / r["ms_per_sample"],
            "evaluations_ratio": ddpm["steps"] / r["steps"]} for r in ddim]
    text = "; ".join(f"DDIM-50 (eta={o['eta']:g}): FID {o['fid_ratio']:.2f}x DDPM-1000's, "
                     f"{o['speedup']:.1f}x faster in wall time "
                     f"({o['evaluations_ratio']:g}x fewer network evaluations)" for o in out)
    return {"rows": out, "text": text}


if __name__ == "__main__":
    main()
