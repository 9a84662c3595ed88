"""Our diffusion code against Hugging Face diffusers: correctness, loop overhead, training speed.

(a) **Sampler correctness** — q_sample vs ``DDPMScheduler.add_noise``; the true posterior
    q(x_{t−1} | x_t, x_0) (mean and variance) vs ``DDPMScheduler.step`` given the exact ε;
    the ancestral step vs ``DDPMScheduler.step`` with the same noise; the DDIM step
    (η = 0 and 1) vs ``DDIMScheduler.step``. Reports the max absolute difference over all
    timesteps, with diffusers' own float32 ᾱ_t and with ᾱ_t in float64 (as ours).
(b) **Per-step overhead** of a sampling loop: ours (``ddim_sample``, ``ddpm_sample``) vs a
    diffusers scheduler loop driving the same tiny model, so the model costs almost nothing
    and what is timed is the loop's own bookkeeping.
(c) **Training throughput**: our UNet vs diffusers ``UNet2DModel`` at a matched parameter
    count (within 10%), same data, batch, AdamW and precision, alternated in one process.

    python benchmarks/bench_vs_diffusers.py                 # CPU, MNIST-size UNets
    python benchmarks/bench_vs_diffusers.py --device cuda   # GPU: DDPM CIFAR-10 size (35.7M),
        bf16 autocast, channels_last, torch.compile, and model FLOP utilisation (MFU)

The ``--device cuda`` variant is written for a GPU; the committed results come from a CPU.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from _common import machine, print_table, timed, write_result
from diffusion_tutorial import GaussianDiffusion, ddim_sample, ddpm_sample
from diffusion_tutorial.unet import UNet, count_parameters

T = 1000


def schedulers(float64_cumprod: bool):
    from diffusers import DDIMScheduler, DDPMScheduler
    common = dict(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                  clip_sample=False, prediction_type="epsilon")
    ddpm_small = DDPMScheduler(variance_type="fixed_small", **common)
    ddpm_large = DDPMScheduler(variance_type="fixed_large", **common)
    ddim = DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **common)
    if float64_cumprod:
        for s in (ddpm_small, ddpm_large, ddim):
            s.alphas_cumprod = torch.cumprod(1 - s.betas.double(), 0)
    return ddpm_small, ddpm_large, ddim


# ---------------------------------------------------------------------- (a) correctness
def correctness(float64_cumprod: bool) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 1, 28, 28, generator=g) * 2 - 1
    noise = torch.randn(8, 1, 28, 28, generator=g)
    eps_model = torch.randn(8, 1, 28, 28, generator=g)
    small, large, ddim = schedulers(float64_cumprod)
    ours_small = GaussianDiffusion(timesteps=T, variance="beta_tilde")
    ours_large = GaussianDiffusion(timesteps=T, variance="beta")
    worst = {k: 0.0 for k in ("q_sample vs add_noise", "posterior mean vs step(exact eps)",
                              "posterior variance vs _get_variance", "ancestral step, sigma^2=beta_tilde",
                              "ancestral step, sigma^2=beta", "DDIM step eta=0 (50 steps)",
                              "DDIM step eta=1 (50 steps)")}

    def upd(key, a, b):
        worst[key] = max(worst[key], (a - b).abs().max().item())

    for t in range(T):
        tt = torch.full((8,), t)
        x_t = ours_small.q_sample(x0, t, noise)
        upd("q_sample vs add_noise", x_t, small.add_noise(x0, noise, tt))
        # Posterior: feed diffusers the exact ε so its x̂_0 is x_0; remove its noise term.
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t))
        step = small.step(noise, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        mean, var = ours_small.q_posterior(x0, x_t, t)
        upd("posterior mean vs step(exact eps)", mean, step - var.sqrt() * z if t > 0 else step)
        upd("posterior variance vs _get_variance", var[0, 0, 0, 0],
            small._get_variance(t).to(torch.float32) if t > 0 else torch.tensor(0.0))
        for ours, theirs, key in ((ours_small, small, "ancestral step, sigma^2=beta_tilde"),
                                  (ours_large, large, "ancestral step, sigma^2=beta")):
            a = ours.p_sample(lambda x, _t: eps_model, x_t, t, noise=z)["sample"]
            b = theirs.step(eps_model, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
            upd(key, a, b)
    ddim.set_timesteps(50)
    for t in ddim.timesteps.tolist():
        x_t = ours_small.q_sample(x0, t, noise)
        t_prev = t - T // 50 if t >= T // 50 else -1
        upd("DDIM step eta=0 (50 steps)", ours_small.ddim_step(x_t, t, t_prev, eps_model),
            ddim.step(eps_model, t, x_t, eta=0.0).prev_sample)
        a = ours_small.ddim_step(x_t, t, t_prev, eps_model, eta=1.0, generator=torch.Generator().manual_seed(t))
        b = ddim.step(eps_model, t, x_t, eta=1.0, generator=torch.Generator().manual_seed(t)).prev_sample
        upd("DDIM step eta=1 (50 steps)", a, b)
    label = "float64 (as ours)" if float64_cumprod else "float32 (diffusers default)"
    return [{"check": k, "diffusers alphas_cumprod": label, "max_abs_diff": v} for k, v in worst.items()]


# ---------------------------------------------------------------------- (b) loop overhead
class TinyEps(torch.nn.Module):
    """A 1x1 convolution: a model that costs next to nothing, so the loop itself is timed."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)

    def forward(self, x, t):
        return self.conv(x)


@torch.no_grad()
def loop_overhead(batch: int, repeats: int) -> list[dict]:
    from diffusers import DDIMScheduler, DDPMScheduler
    model = TinyEps().eval()
    diffusion = GaussianDiffusion(timesteps=T)
    shape = (batch, 1, 28, 28)
    common = dict(num_train_timesteps=T, beta_schedule="linear", clip_sample=False)
    ddim = DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **common)
    ddpm = DDPMScheduler(**common)

    def theirs_ddim(steps):
        ddim.set_timesteps(steps)
        x = torch.randn(shape)
        for t in ddim.timesteps:
            x = ddim.step(model(x, t), t, x).prev_sample
        return x

    def theirs_ddpm():
        ddpm.set_timesteps(T)
        x = torch.randn(shape)
        g = torch.Generator().manual_seed(0)
        for t in ddpm.timesteps:
            x = ddpm.step(model(x, t), t, x, generator=g).prev_sample
        return x

    rows = []
    cases = [("DDIM, 50 steps", 50, lambda: ddim_sample(diffusion, model, shape, steps=50, progress=False),
              lambda: theirs_ddim(50)),
             ("DDPM, 1000 steps", 1000, lambda: ddpm_sample(diffusion, model, shape, progress=False),
              theirs_ddpm)]
    for name, steps, ours, theirs in cases:
        a, b = [], []
        for _ in range(repeats):  # alternate, so both see the same machine load
            a.append(timed(ours, 1, warmup=0)["median"])
            b.append(timed(theirs, 1, warmup=0)["median"])
        a_ms, b_ms = 1e3 * min(a) / steps, 1e3 * min(b) / steps
        rows.append({"loop": name, "batch": batch, "ours_ms_per_step": a_ms,
                     "diffusers_ms_per_step": b_ms, "ours/diffusers": a_ms / b_ms})
    return rows


# ---------------------------------------------------------------------- (c) training speed
def model_pair(size: str):
    """Our UNet and a diffusers UNet2DModel of (nearly) the same parameter count."""
    from diffusers import UNet2DModel
    if size == "mnist":
        ours = UNet(1, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                    attention_resolutions=(), image_size=28)
        theirs = UNet2DModel(sample_size=28, in_channels=1, out_channels=1,
                             block_out_channels=(32, 64, 64), layers_per_block=1,
                             down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                             norm_num_groups=8)
        return ours, theirs, (1, 28, 28)
    # DDPM CIFAR-10 (Ho et al. 2020, appendix B) and its diffusers counterpart.
    ours = UNet(3, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                attention_resolutions=(16,), image_size=32, dropout=0.1, groups=32)
    theirs = UNet2DModel(sample_size=32, in_channels=3, out_channels=3,
                         block_out_channels=(128, 256, 256, 256), layers_per_block=2,
                         down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                         dropout=0.1, attention_head_dim=None)
    return ours, theirs, (3, 32, 32)


class DiffusersEps(torch.nn.Module):
    """UNet2DModel behind our ``model(x_t, t)`` interface (it returns an output object)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t):
        return self.unet(x, t).sample


def training_throughput(size: str, device: str, batch: int, steps: int, rounds: int,
                        compile_: bool, peak_tflops: float) -> dict:
    ours, theirs, shape = model_pair(size)
    n_ours, n_theirs = count_parameters(ours), count_parameters(theirs)
    assert abs(n_ours - n_theirs) / n_ours < 0.10, (n_ours, n_theirs)
    cuda = device.startswith("cuda")
    diffusion = GaussianDiffusion(timesteps=T).to(device)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    data = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0)).mul(2).sub(1)
    data = data.to(device).contiguous(memory_format=fmt)
    models = {"ours": ours, "diffusers": DiffusersEps(theirs)}
    steppers, flops = {}, {}
    for name, m in models.items():
        m = m.to(device, memory_format=fmt).train()
        opt = torch.optim.AdamW(m.parameters(), lr=2e-4)
        fwd = torch.compile(m) if compile_ else m

        def step(m=m, fwd=fwd, opt=opt):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = diffusion.p_losses(fwd, data)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        steppers[name] = step
        if cuda:  # FLOPs of one training step (forward + backward), counted once, uncompiled
            from torch.utils.flop_counter import FlopCounterMode
            with FlopCounterMode(display=False) as counter:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    diffusion.p_losses(m, data).backward()
            m.zero_grad(set_to_none=True)
            flops[name] = counter.get_total_flops()
    sync = torch.cuda.synchronize if cuda else None
    for s in steppers.values():  # warm-up (and compilation)
        for _ in range(3):
            s()
    times = {k: [] for k in steppers}
    for _ in range(rounds):  # alternate ours / diffusers so both see the same load
        for name, s in steppers.items():
            times[name].append(timed(s, steps, warmup=0, sync=sync)["median"])
    result = {"size": size, "device": device, "batch": batch, "precision": "bf16 autocast" if cuda else "fp32",
              "channels_last": cuda, "compiled": compile_, "params_ours": n_ours,
              "params_diffusers": n_theirs}
    for name in steppers:
        t = sorted(times[name])[len(times[name]) // 2]  # median over rounds of per-round medians
        result[f"{name}_images_per_s"] = batch / t
        if name in flops and peak_tflops:
            result[f"{name}_mfu"] = flops[name] / t / (peak_tflops * 1e12)
    result["ours/diffusers"] = result["ours_images_per_s"] / result["diffusers_images_per_s"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 64 CPU, 128 GPU)")
    p.add_argument("--steps", type=int, default=5, help="training steps timed per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per model")
    p.add_argument("--loop-repeats", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="GPU: skip torch.compile")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="GPU peak dense bf16 TFLOP/s for MFU (H100 SXM: 989)")
    p.add_argument("--out-dir", default=None)
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but no CUDA GPU is visible.")

    t0 = time.perf_counter()
    rows_a = correctness(False) + correctness(True)
    print("\n(a) sampler correctness: max |ours - diffusers| over all timesteps")
    print_table(rows_a, ["check", "diffusers alphas_cumprod", "max_abs_diff"])

    rows_b = loop_overhead(batch=16, repeats=args.loop_repeats)
    print("\n(b) sampling-loop overhead with a 1x1-conv model (best of repeats)")
    print_table(rows_b, ["loop", "batch", "ours_ms_per_step", "diffusers_ms_per_step", "ours/diffusers"])

    size = "cifar10" if cuda else "mnist"
    batch = args.batch or (128 if cuda else 64)
    row_c = training_throughput(size, args.device, batch, args.steps, args.rounds,
                                compile_=cuda and not args.no_compile, peak_tflops=args.peak_tflops if cuda else 0)
    print("\n(c) training throughput, alternated in one process")
    cols = ["size", "device", "batch", "precision", "params_ours", "params_diffusers",
            "ours_images_per_s", "diffusers_images_per_s", "ours/diffusers"]
    cols += [c for c in ("ours_mfu", "diffusers_mfu") if c in row_c]
    print_table([row_c], cols)
    write_result("vs_diffusers" + ("_cuda" if cuda else ""), {
        "machine": machine(args.device, "shared 2-core CPU, loaded by other jobs" if not cuda else ""),
        "correctness": rows_a, "loop_overhead": rows_b, "training": row_c,
        "seconds": round(time.perf_counter() - t0, 1)}, args.out_dir)


if __name__ == "__main__":
    main()
