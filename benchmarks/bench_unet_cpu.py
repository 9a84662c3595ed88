"""CPU training speed of the UNet: forward + backward + Adam step at batch 64 on 1x28x28.

Prints, for a small (~0.5M parameters) and the default (~2.7M) MNIST UNet, the parameter
count, the floating-point work of one training step, and steps per second in the default
(contiguous NCHW) and the channels_last memory format.

    python benchmarks/bench_unet_cpu.py [--steps 8] [--batch 64] [--threads N]

The two formats are timed in alternating rounds and each rate is 1 / (median step time),
so that a burst of other work on the machine disturbs both alike. Numbers depend heavily
on the machine and on its load; report them with the hardware (e.g. "2-core x86 CPU, idle").
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffusion_tutorial import GaussianDiffusion
from diffusion_tutorial.unet import UNet, count_parameters
from diffusion_tutorial.utils import wall_times

CONFIGS = {
    "16/32/48": dict(base_channels=16, channel_mults=(1, 2, 3)),
    "16/32/64": dict(base_channels=16, channel_mults=(1, 2, 4)),
    "32/64/128 (default)": dict(base_channels=32, channel_mults=(1, 2, 4)),
}
FORMATS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}


def make_step(kwargs: dict, fmt: torch.memory_format, diffusion: GaussianDiffusion, batch: int):
    """A closure that runs one training step of a fresh model in memory format ``fmt``."""
    model = UNet(in_channels=1, image_size=28, attention_resolutions=(7,), **kwargs)
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x0 = torch.randn(batch, 1, 28, 28).contiguous(memory_format=fmt)

    def step() -> None:
        loss = diffusion.p_losses(model, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, step


def gflop_per_step(model: torch.nn.Module, batch: int) -> float:
    """Floating-point work of forward + backward (convolutions, matmuls, attention)."""
    x = torch.randn(batch, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        model(x, torch.zeros(batch, dtype=torch.long)).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per format")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(timesteps=1000)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.steps} steps (forward + backward + Adam)")
    print(f"{'config':<21}{'params':>10}{'GFLOP/step':>12}"
          + "".join(f"{n + ' steps/s':>22}" for n in FORMATS))
    for name, kwargs in CONFIGS.items():
        runs = {n: make_step(kwargs, fmt, diffusion, args.batch) for n, fmt in FORMATS.items()}
        times = {n: [] for n in FORMATS}
        for _, step in runs.values():  # warm-up
            step()
            step()
        for _ in range(args.steps):  # alternate the formats, one step each
            for n, (_, step) in runs.items():
                times[n] += wall_times(step, 1, warmup=0)
        model = runs["NCHW"][0]
        rates = "".join(f"{1 / statistics.median(times[n]):>22.2f}" for n in FORMATS)
        print(f"{name:<21}{count_parameters(model):>10,}{gflop_per_step(model, args.batch):>12.1f}{rates}")


if __name__ == "__main__":
    main()
