"""Our diffusion code against Hugging Face diffusers: correctness, loop overhead, training speed.

(a) **Sampler correctness** — q_sample vs ``DDPMScheduler.add_noise``; the true posterior
    q(x_{t−1} | x_t, x_0) (mean and variance) vs ``DDPMScheduler.step`` given the exact ε;
    the ancestral step vs ``DDPMScheduler.step`` with the same noise; the DDIM step
    (η = 0 and 1) vs ``DDIMScheduler.step``. Reports the max absolute difference over all
    timesteps, with diffusers' own float32 ᾱ_t and with ᾱ_t in float64 (as ours).
(b) **Per-step overhead** of a sampling loop: ours (``ddim_sample``, ``ddpm_sample``) vs a
    diffusers scheduler loop driving the same tiny model, so the model costs almost nothing
    and what is timed is the loop's own bookkeeping.
(c) **Training throughput**: our UNet vs diffusers ``UNet2DModel`` built to the same design
    (matched parameter count, checked within 10%), same data, batch, AdamW and precision,
    alternated in one process. On a CPU: the quick preset's UNet (the one the CLI trains),
    in both memory layouts, with the share of the step spent in convolutions.

    python benchmarks/bench_vs_diffusers.py                 # CPU, the quick preset's UNet
    python benchmarks/bench_vs_diffusers.py --device cuda   # GPU: DDPM CIFAR-10 size (35.7M),
        bf16 autocast (fp16 + GradScaler on a T4 or V100), channels_last, fused AdamW,
        torch.compile, model FLOP utilisation (MFU)
    python benchmarks/bench_vs_diffusers.py --device cuda --no-compile --result-name vs_diffusers_cuda_eager

On a GPU the result carries issue 10's target (our compiled step at least 1.2x diffusers'
compiled one, on an H100-class GPU) as target / measured / met; where it is missed (or with
``--profile always``) our step is profiled and the shares of convolution, normalization,
attention and the rest say what bounds it. ``--only-training`` skips (a) and (b).
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from _common import add_note_option, machine, print_table, timed, write_result
from _perf import bound_text, format_targets, peak_flops, profile_shares, target_applies, target_row
from diffusion_tutorial import GaussianDiffusion, ddim_sample, ddpm_sample
from diffusion_tutorial.precision import adamw_options, autocast, autocast_dtype, describe, grad_scaler
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
        a = ours_small.ddim_step(x_t, t, t_prev, eps_model, eta=1.0,
                                 generator=torch.Generator().manual_seed(t))
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
    """Our UNet and a diffusers UNet2DModel built to the same design (same parameter count)."""
    from diffusers import UNet2DModel
    if size == "mnist":  # the model of the quick preset, which the book and the CLI train
        from diffusion_tutorial import get_config
        ours = get_config("quick").build_model()
        theirs = UNet2DModel(sample_size=28, in_channels=1, out_channels=1,
                             block_out_channels=(16, 32, 64), layers_per_block=1,
                             down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                             up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                             norm_num_groups=8, attention_head_dim=16)  # 4 heads of 16, as ours
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


LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}


def conv_share(step) -> float:
    """Fraction of a training step's CPU time spent in convolutions (forward and backward),
    from the PyTorch profiler over two steps."""
    return profile_shares(lambda: (step(), step()), cuda=False)["shares"]["convolution"]


def training_throughput(size: str, device: str, batch: int, steps: int, rounds: int,
                        compile_: bool, peak_tflops: float, backend: str = "inductor",
                        profile: str = "auto", warmup: int = 3, layouts=None) -> dict:
    """Images/s of a full training step (forward, backward, AdamW) for both models.

    On a CPU each model runs in both memory layouts (four variants, alternated), and the
    ratio is given per layout and for each model's faster layout. On a GPU both use
    channels_last, the package's mixed precision for the GPU (bf16 autocast from compute
    capability 8.0, fp16 with a GradScaler before), fused AdamW and (with ``compile_``)
    ``torch.compile`` with ``backend``. ``profile``: profile our step where the target is
    missed (auto), always or never. ``warmup`` steps (compilation included) precede the timing; ``layouts``
    restricts a CPU run to some of :data:`LAYOUTS`."""
    ours0, theirs0, shape = model_pair(size)
    n_ours, n_theirs = count_parameters(ours0), count_parameters(theirs0)
    assert abs(n_ours - n_theirs) / n_ours < 0.10, (n_ours, n_theirs)
    cuda = device.startswith("cuda")
    diffusion = GaussianDiffusion(timesteps=T).to(device)
    layouts = ["channels_last"] if cuda else list(layouts or LAYOUTS)
    data0 = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0)).mul(2).sub(1).to(device)
    steppers, flops, shares = {}, {}, {}
    dtype = autocast_dtype(device, "auto")   # the package's choice: bf16 from A100 on, fp16 + scaler before
    for name, base in (("ours", ours0), ("diffusers", DiffusersEps(theirs0))):
        for layout in layouts:
            fmt = LAYOUTS[layout]
            m = copy.deepcopy(base).to(device, memory_format=fmt).train()
            data = data0.contiguous(memory_format=fmt)
            opt = torch.optim.AdamW(m.parameters(), lr=2e-4, **adamw_options(device))
            scaler = grad_scaler(device, dtype)
            fwd = torch.compile(m, backend=backend) if compile_ else m

            def step(fwd=fwd, opt=opt, data=data, scaler=scaler):
                with autocast(device, dtype):
                    loss = diffusion.p_losses(fwd, data)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            steppers[(name, layout)] = step
            if cuda and (name, layout) not in flops:  # FLOPs of one step, counted uncompiled
                from torch.utils.flop_counter import FlopCounterMode
                with FlopCounterMode(display=False) as counter:
                    with autocast(device, dtype):
                        diffusion.p_losses(m, data).backward()
                m.zero_grad(set_to_none=True)
                flops[(name, layout)] = counter.get_total_flops()
    for s in steppers.values():  # warm-up (and compilation)
        for _ in range(warmup):
            s()
    times = {k: [] for k in steppers}
    for _ in range(rounds):  # alternate all variants so they see the same load
        for key, s in steppers.items():
            times[key].append(timed(s, steps, warmup=0, device=device)["median"])
    if not cuda:
        shares = {key: conv_share(s) for key, s in steppers.items()}
    rows = []
    for (name, layout), ts in times.items():
        t = sorted(ts)[len(ts) // 2]  # median over rounds of per-round medians
        row = {"model": name, "layout": layout, "images_per_s": batch / t, "ms_per_step": 1e3 * t}
        if (name, layout) in shares:
            row["conv_share"] = shares[(name, layout)]
        if (name, layout) in flops and peak_tflops:
            row["mfu"] = flops[(name, layout)] / t / (peak_tflops * 1e12)
            row["gflop_per_image"] = flops[(name, layout)] / batch / 1e9
        rows.append(row)
    speed = {(r["model"], r["layout"]): r["images_per_s"] for r in rows}
    best = {m: max(v for (k, _), v in speed.items() if k == m) for m in ("ours", "diffusers")}
    ratios = {f"ours/diffusers ({layout})": speed[("ours", layout)] / speed[("diffusers", layout)]
              for layout in layouts}
    ratios["ours/diffusers (each in its faster layout)"] = best["ours"] / best["diffusers"]
    result = {"size": size, "device": device, "batch": batch,
              "precision": describe(dtype, grad_scaler(device, dtype)), "compiled": compile_,
              "params_ours": n_ours, "params_diffusers": n_theirs, "rows": rows, "ratios": ratios}
    if not cuda:  # Amdahl: identical convolutions bound what the rest of the code can win
        d_best = max((r for r in rows if r["model"] == "diffusers"), key=lambda r: r["images_per_s"])
        result["bound_if_only_convolutions_remained"] = 1 / d_best["conv_share"]
    gpu = torch.cuda.get_device_name() if cuda else None
    applies = cuda and compile_ and size == "cifar10" and target_applies(gpu)
    why = "" if cuda and compile_ else "the target is for the compiled step on a GPU"
    measured = ratios["ours/diffusers (each in its faster layout)"]
    result["targets"] = [target_row("ours_vs_diffusers_compiled", measured, applies, why)]
    if profile == "always" or (profile == "auto" and result["targets"][0]["met"] is False):
        ours = steppers[("ours", layouts[-1])]
        result["profile_ours"] = profile_shares(lambda: [ours() for _ in range(steps)], cuda)
        result["bound"] = bound_text(result["profile_ours"])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 64 CPU, 128 GPU)")
    p.add_argument("--steps", type=int, default=5, help="training steps timed per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per model")
    p.add_argument("--loop-repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model first (compilation)")
    p.add_argument("--layouts", default=None, help="CPU: comma-separated subset of NCHW,channels_last")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile both models (default: on with CUDA, off on a CPU)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend ('eager' checks the compiled path cheaply on a CPU)")
    p.add_argument("--only-training", action="store_true", help="skip (a) and (b)")
    p.add_argument("--profile", choices=["auto", "always", "never"], default="auto",
                   help="profile our step: where the target is missed (auto), always or never")
    p.add_argument("--result-name", default=None, help="default vs_diffusers, vs_diffusers_cuda on a GPU")
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="GPU peak dense TFLOP/s for MFU (default: from the GPU's name; H100/H200: 989)")
    p.add_argument("--out-dir", default=None)
    add_note_option(p)
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but no CUDA GPU is visible.")

    t0 = time.perf_counter()
    rows_a, rows_b = [], []
    if not args.only_training:
        rows_a = correctness(False) + correctness(True)
        print("\n(a) sampler correctness: max |ours - diffusers| over all timesteps")
        print_table(rows_a, ["check", "diffusers alphas_cumprod", "max_abs_diff"])

        rows_b = loop_overhead(batch=16, repeats=args.loop_repeats)
        print("\n(b) sampling-loop overhead with a 1x1-conv model (best of repeats)")
        print_table(rows_b, ["loop", "batch", "ours_ms_per_step", "diffusers_ms_per_step", "ours/diffusers"])

    size = "cifar10" if cuda else "mnist"
    batch = args.batch or (128 if cuda else 64)
    compile_ = cuda if args.compile is None else args.compile
    peak, peak_label = peak_flops(torch.cuda.get_device_name() if cuda else None, args.peak_tflops)
    row_c = training_throughput(size, args.device, batch, args.steps, args.rounds, compile_=compile_,
                                peak_tflops=peak / 1e12, backend=args.compile_backend, profile=args.profile,
                                warmup=args.warmup, layouts=args.layouts.split(",") if args.layouts else None)
    row_c["peak"] = peak_label
    if compile_:
        row_c["compile_backend"] = args.compile_backend
    print(f"\n(c) training throughput, {size}-size UNets ({row_c['params_ours']:,} vs "
          f"{row_c['params_diffusers']:,} parameters), batch {batch}, {row_c['precision']}, "
          "alternated in one process")
    print_table(row_c["rows"], [c for c in ("model", "layout", "images_per_s", "ms_per_step",
                                            "conv_share", "mfu", "gflop_per_image")
                                if c in row_c["rows"][0]])
    for k, v in row_c["ratios"].items():
        print(f"{k}: {v:.3f}")
    if "bound_if_only_convolutions_remained" in row_c:
        print("upper bound on ours/diffusers if every non-convolution op of ours cost nothing: "
              f"{row_c['bound_if_only_convolutions_remained']:.2f}")
    print(format_targets(row_c["targets"]))
    if "bound" in row_c:
        print("our step:", row_c["bound"])
    write_result(args.result_name or "vs_diffusers" + ("_cuda" if cuda else ""), {
        "machine": machine(args.device, args.note),
        "correctness": rows_a, "loop_overhead": rows_b, "training": row_c,
        "seconds": round(time.perf_counter() - t0, 1)}, args.out_dir)


if __name__ == "__main__":
    main()
