"""Sample quality against the number of sampling steps, with the shipped MNIST model.

Ancestral DDPM sampling with all T = 1000 steps against DDIM (Song et al. 2021) with
10/20/50/100/250 steps, deterministic (η = 0) and stochastic (η = 1). For each: the
classifier-FID (with its real-vs-real floor at the same sample count), the confident
share, the class entropy, and the wall time per sample.

    python benchmarks/bench_quality_vs_steps.py [--n 128] [--n-ddpm 64] [--steps 10,20,50,100,250]

All samplers start from the same x_T (seeded), so differences come from the sampler.
On a CPU the sample counts are small (the defaults above), which makes the FID noisy and
biased upwards: compare rows with each other and with the floor, not with published FIDs.
"""
from __future__ import annotations

import argparse
import time

import torch

from _common import machine, print_table, write_result
from diffusion_tutorial import ddim_sample, ddpm_sample, load_pretrained
from diffusion_tutorial.metrics import evaluate_samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=128, help="samples per DDIM setting")
    p.add_argument("--n-ddpm", type=int, default=64, help="samples for DDPM-1000 (slow on CPU)")
    p.add_argument("--steps", default="10,20,50,100,250")
    p.add_argument("--etas", default="0,1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default=None)
    args = p.parse_args()
    model, diffusion, info = load_pretrained("mnist", device=args.device)
    x_T = torch.randn(max(args.n, args.n_ddpm), 1, 28, 28, generator=torch.Generator().manual_seed(0))
    rows = []

    def run(name, fn, n, steps, eta):
        g = torch.Generator().manual_seed(1)
        t0 = time.perf_counter()
        x = fn(x_T[:n].to(args.device), g).cpu()
        seconds = time.perf_counter() - t0
        m = evaluate_samples(x)
        row = {"sampler": name, "steps": steps, "eta": eta, "n": n, "fid": m["fid"],
               "fid_floor": m["fid_floor"], "confident_share": m["confident_share"],
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
    print_table(rows, ["sampler", "steps", "eta", "n", "fid", "fid_floor", "confident_share",
                       "class_entropy", "ms_per_sample"])
    write_result("quality_vs_steps", {
        "machine": machine(args.device, "shared 2-core CPU, loaded by other jobs"),
        "model": {"name": "mnist", "command": info["command"],
                  "steps_trained": info.get("training", {}).get("steps")},
        "rows": rows}, args.out_dir)


if __name__ == "__main__":
    main()
