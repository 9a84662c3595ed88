"""CPU training speed of the UNet: forward + backward + Adam step at batch 64 on 1x28x28.

Prints a table of parameter counts and steps/s for a small (~0.5M) and a mid-size (~2M)
MNIST UNet, each in the default (contiguous NCHW) and channels_last memory formats.

    python benchmarks/bench_unet_cpu.py [--steps 20] [--batch 64] [--threads N]

Numbers depend heavily on the machine and on what else runs on it; report them together
with the hardware (e.g. "2-core x86 CPU, idle").
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffusion_tutorial import GaussianDiffusion
from diffusion_tutorial.unet import UNet, count_parameters

CONFIGS = {
    "small (16/32/64)": dict(base_channels=16, channel_mults=(1, 2, 4)),
    "small (16/32/48)": dict(base_channels=16, channel_mults=(1, 2, 3)),
    "default (32/64/128)": dict(base_channels=32, channel_mults=(1, 2, 4)),
}


def steps_per_second(model: torch.nn.Module, diffusion: GaussianDiffusion, batch: int,
                     steps: int, channels_last: bool) -> float:
    """Time ``steps`` training steps (after 3 warm-up steps); return 1 / median step time,
    which is less disturbed than the mean by other processes on a shared machine."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x0 = torch.randn(batch, 1, 28, 28).contiguous(memory_format=fmt)

    def step() -> None:
        loss = diffusion.p_losses(model, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(timesteps=1000)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.steps} timed steps (forward + backward + Adam)")
    print(f"{'config':<22}{'params':>11}{'NCHW steps/s':>15}{'channels_last':>15}")
    for name, kwargs in CONFIGS.items():
        model = UNet(in_channels=1, image_size=28, attention_resolutions=(7,), **kwargs)
        rates = [steps_per_second(model, diffusion, args.batch, args.steps, cl) for cl in (False, True)]
        print(f"{name:<22}{count_parameters(model):>11,}{rates[0]:>15.2f}{rates[1]:>15.2f}")


if __name__ == "__main__":
    main()
