"""Training-step time and peak memory against batch size and model width, on the CPU.

One training step (noise, forward, L_simple, backward, AdamW) of the ``quick`` preset's
MNIST UNet (channel_mults (1, 2, 4), one residual block per level, attention at 7x7; base
width 16 there), timed at several batch sizes and several base widths. Each setting runs in a
fresh subprocess, so its peak resident memory (``ru_maxrss``) is its own.

    python benchmarks/bench_scaling.py [--batches 8,16,32,64,128] [--widths 8,16,32,64] [--steps 3]

An empty sweep (``--batches ""``) keeps that sweep's rows from the previous result file.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import add_note_option, RESULTS_DIR, machine, print_table, write_result


def one(batch: int, width: int, steps: int) -> dict:
    """Run inside the subprocess: time ``steps`` steps after one warm-up step."""
    import torch
    from _common import peak_rss_mib, timed
    from diffusion_tutorial import GaussianDiffusion, get_config
    from diffusion_tutorial.unet import count_parameters
    base_rss = peak_rss_mib()
    torch.manual_seed(0)
    model = get_config("quick", base_channels=width, groups=min(8, width)).build_model()
    diffusion = GaussianDiffusion(timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x0 = torch.rand(batch, 1, 28, 28) * 2 - 1

    def step():
        loss = diffusion.p_losses(model, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    t = timed(step, steps, warmup=1)
    return {"batch": batch, "width": width, "params": count_parameters(model),
            "step_s": t["median"], "images_per_s": batch / t["median"],
            "peak_rss_mib": peak_rss_mib(), "rss_over_import_mib": peak_rss_mib() - base_rss}


def run_subprocess(batch: int, width: int, steps: int) -> dict:
    code = f"import json, bench_scaling as b; print(json.dumps(b.one({batch}, {width}, {steps})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).parent))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="8,16,32,64,128")
    p.add_argument("--widths", default="8,16,32,64")
    p.add_argument("--width", type=int, default=16, help="width for the batch sweep (quick: 16)")
    p.add_argument("--batch", type=int, default=64, help="batch for the width sweep (quick: 64)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out-dir", default=None)
    add_note_option(p)
    args = p.parse_args()
    cols = ["batch", "width", "params", "step_s", "images_per_s", "peak_rss_mib"]
    previous = {}
    old = RESULTS_DIR / "scaling.json"
    if old.exists():  # a sweep given as "" keeps the rows of the previous run
        previous = json.loads(old.read_text())
    result = {"machine": machine("cpu", args.note),
              "steps_timed": args.steps}
    for key, values, make, title in (
            ("by_batch", args.batches, lambda b: run_subprocess(b, args.width, args.steps),
             f"batch sweep (base width {args.width})"),
            ("by_width", args.widths, lambda w: run_subprocess(args.batch, w, args.steps),
             f"width sweep (batch {args.batch})")):
        if values:
            result[key] = [make(int(v)) for v in values.split(",")]
        else:
            result[key] = previous.get(key, [])
            result[key + "_from"] = previous.get("date", "")
        print(f"\n{title}")
        print_table(result[key], cols)
    write_result("scaling", result, args.out_dir)


if __name__ == "__main__":
    main()
