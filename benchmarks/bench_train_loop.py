"""Speed of the real training loop: ``python -m diffusion_tutorial train`` as a user runs it.

Starts the CLI on a preset, stops it (as Ctrl-C does) after ``--seconds``, and reads the
steady rate from the run's loss log (after start-up and compilation), as steps/s and
images/s, with the model FLOP utilisation (MFU) against the chip's peak
(:mod:`diffusion_tutorial.flops`). Issue 10's targets for one H100-class GPU are printed as
target / measured / met; where one is missed (or with ``--profile always``) a short
in-process run of :func:`diffusion_tutorial.train` is profiled, and the shares of
convolution, normalization, attention and everything else say what bounds the step.

    python benchmarks/bench_train_loop.py --preset cifar10 --data-dir data      # GPU
    python benchmarks/bench_train_loop.py --preset full --seconds 60
    python benchmarks/bench_train_loop.py --preset tiny --device cpu --seconds 10 --profile always

Without CIFAR-10 files in ``--data-dir`` (``--data auto``) the cifar10 preset trains on
random uint8 data written in the CIFAR-10 python format, and the result says so; without
MNIST files the full preset trains on ``mnist-sample``. Flags the script does not know
(``--compile``, ``--batch-size 32``, ...) go to the training command unchanged. CPU runs
exercise the script; their figures are not GPU figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

from _common import add_note_option, machine, write_result
from _perf import (bound_text, format_targets, has_cifar10, has_mnist, model_step_flops, peak_flops,
                   profile_shares, read_loss_log, run_command, steady_rate, target_applies,
                   target_row, write_random_cifar10)

TARGET_OF_PRESET = {"cifar10": "cifar10_cli_images_per_s", "full": "full_cli_steps_per_s"}
SIZE_FIELDS = ("dataset", "image_size", "base_channels", "channel_mults", "num_res_blocks",
               "attention_resolutions", "groups", "num_heads", "batch_size", "class_conditional")


def build_config(preset: str, train_args: list[str]):
    """The :class:`TrainConfig` the CLI builds from ``--preset preset`` and ``train_args``."""
    from diffusion_tutorial.cli import SKIP, build_parser
    from diffusion_tutorial.config import TrainConfig, get_config
    args, extra = build_parser().parse_known_args(["train", "--preset", preset, *train_args])
    if extra:
        raise SystemExit(f"error: the training command does not know {' '.join(extra)} "
                         "(see `python -m diffusion_tutorial train --help`)")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name not in SKIP}
    return get_config(preset, **overrides)


def choose_data(preset: str, data_dir: str, mode: str, work: Path, per_batch: int) -> tuple[list, str]:
    """(extra training flags, a sentence for the report) for the preset's data."""
    if preset == "cifar10":
        if mode != "random" and has_cifar10(data_dir):
            return ["--data-dir", data_dir], "the CIFAR-10 files in --data-dir"
        if mode == "real":
            raise SystemExit(f"error: no CIFAR-10 files in {data_dir}/cifar-10-batches-py: place them "
                             "there, or use --data random")
        folder = work / "cifar-random"
        write_random_cifar10(folder, per_batch)
        return (["--data-dir", str(folder)],
                f"random uint8 data in the CIFAR-10 python format ({5 * per_batch:,} images; "
                "no CIFAR-10 files in --data-dir)")
    if preset == "full":
        if mode != "random" and has_mnist(data_dir):
            return ["--data-dir", data_dir], "the MNIST files in --data-dir"
        return (["--dataset", "mnist-sample"],
                "mnist-sample (4,500 digits shipped with the package; no MNIST files in --data-dir)")
    return [], "the preset's own dataset"


def profile_train(config, steps: int, work: Path, device) -> dict:
    """Profile shares of a short run of the real :func:`diffusion_tutorial.train` (warm-up
    and the end-of-run checkpoint included; host-device copies left out on a GPU)."""
    from diffusion_tutorial import train
    short = dataclasses.replace(config, steps=steps, run_dir=str(work / "profile-run"), sample_every=0,
                                checkpoint_every=0, n_samples=1, sample_steps=1, device=str(device),
                                warmup_steps=min(config.warmup_steps, steps))
    return profile_shares(lambda: train(short, progress=False, overwrite=True), device.type == "cuda")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cifar10")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--data", choices=["auto", "real", "random"], default="auto",
                   help="cifar10: the files in --data-dir, random CIFAR-format data, or real if present")
    p.add_argument("--random-per-batch", type=int, default=10_000,
                   help="images per random CIFAR-format batch file (5 training batches)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=60.0,
                   help="stop the training this long after it starts (its loss log appears)")
    p.add_argument("--grace", type=float, default=90.0, help="seconds allowed to stop after SIGINT")
    p.add_argument("--max-steps", type=int, default=1_000_000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--skip-fraction", type=float, default=0.25,
                   help="share of the logged time after the first record left out as warm-up")
    p.add_argument("--profile", choices=["auto", "always", "never"], default="auto",
                   help="auto: profile where a judged target is missed")
    p.add_argument("--profile-steps", type=int, default=20)
    p.add_argument("--profile-only", action="store_true", help="no timed run: only the profile")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="the chip's peak (default: from its name)")
    p.add_argument("--work-dir", default=None, help="run folders and random data (default: a temporary one)")
    p.add_argument("--result-name", default=None, help="default train_loop_<preset>")
    p.add_argument("--out-dir", default=None)
    add_note_option(p)
    args, train_args = p.parse_known_args()

    from diffusion_tutorial import get_device
    device = get_device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_train_loop-"))
    work.mkdir(parents=True, exist_ok=True)
    data_flags, data_note = choose_data(args.preset, args.data_dir, args.data, work, args.random_per_batch)
    train_args = data_flags + train_args
    config = build_config(args.preset, train_args)
    preset_config = build_config(args.preset, data_flags)
    name = args.result_name or f"train_loop_{args.preset}"
    if args.profile_only:
        prof = profile_train(config, args.profile_steps, work, device)
        print(bound_text(prof))
        write_result(name, {"machine": machine(str(device), args.note), "preset": args.preset, "gpu": gpu,
                            "batch": config.batch_size, "data": data_note, "profile": prof,
                            "bound": bound_text(prof)}, args.out_dir)
        return
    run_dir = work / f"run-{args.preset}"
    cmd = [sys.executable, "-m", "diffusion_tutorial", "train", "--preset", args.preset,
           "--out", str(run_dir), "--steps", str(args.max_steps), "--log-every", str(args.log_every),
           "--checkpoint-every", "0", "--sample-every", "0", "--no-progress", "--device", str(device),
           *train_args]
    print("running:", " ".join(cmd), flush=True)
    log_path = work / f"train-{args.preset}.log"
    run = run_command(cmd, args.seconds, log_path, "train", interrupt_first=True, grace=args.grace,
                      start_file=run_dir / "loss_log.jsonl")
    code, wall = run["rc"], run["wall_s"]
    ended = "stopped at the time limit (SIGINT)" if run["timed_out"] else "finished its steps"
    log = read_loss_log(run_dir / "loss_log.jsonl") if (run_dir / "loss_log.jsonl").exists() else []
    rate = None
    if log:  # the first record comes after start-up and compilation; skip a share after it too
        first = log[0]["time"]
        rate = steady_rate(log, first + args.skip_fraction * (log[-1]["time"] - first))
        rate = rate or steady_rate(log, first)   # a short run: everything after the first record
    ok = code in (0, 130) and rate is not None
    flops = model_step_flops(config)
    peak, peak_label = peak_flops(gpu, args.peak_tflops)
    result = {"preset": args.preset, "device": str(device), "gpu": gpu, "batch": config.batch_size,
              "data": data_note, "train_command": " ".join(["python", *cmd[1:]]).replace(str(work), "WORK"),
              "exit_code": code, "ended": ended, "wall_s": round(wall, 1), "ok": ok,
              "gflop_per_image": flops / config.batch_size / 1e9, "peak": peak_label}
    if not ok:
        why = f"failed (exit {code})" if code not in (0, 130) else f"logged {len(log)} record(s), too few"
        result["error"] = f"the training command {why}: {run['tail'][-800:]}"
    else:
        steps_s = rate["steps_per_s"]
        result.update({"steady": rate, "steps_per_s": steps_s, "images_per_s": steps_s * config.batch_size,
                       "mfu": flops * steps_s / peak if peak else None})
    same_sizes = all(getattr(config, f) == getattr(preset_config, f) for f in SIZE_FIELDS)
    key = TARGET_OF_PRESET.get(args.preset)
    if key:
        measured = result.get("images_per_s" if args.preset == "cifar10" else "steps_per_s")
        applies = target_applies(gpu) and same_sizes
        why = "" if same_sizes else "sizes differ from the preset's"
        result["targets"] = [target_row(key, measured, applies, why)]
    missed = any(r["met"] is False for r in result.get("targets", []))
    machine_info = machine(str(device), args.note)
    path = write_result(name, {"machine": machine_info, **result}, args.out_dir)
    summary(result)
    if args.profile == "always" or (args.profile == "auto" and missed):
        result["profile"] = profile_train(config, args.profile_steps, work, device)
        result["bound"] = bound_text(result["profile"])
        print(result["bound"])
        path = write_result(name, {"machine": machine_info, **result}, args.out_dir)
    if not ok:
        raise SystemExit(f"error: {result['error'][:300]} (full result in {path})")


def summary(result: dict) -> None:
    print(f"\n{result['preset']} preset, batch {result['batch']}, {result['device']}"
          f"{' (' + result['gpu'] + ')' if result['gpu'] else ''}; data: {result['data']}")
    print(f"training command {result['ended']} after {result['wall_s']} s (exit {result['exit_code']})")
    if result["ok"]:
        s = result["steady"]
        mfu = f"{result['mfu']:.1%}" if result.get("mfu") is not None else "n/a"
        print(f"steady rate, steps {s['from_step']}..{s['to_step']}: {result['steps_per_s']:.2f} steps/s = "
              f"{result['images_per_s']:,.0f} images/s; {result['gflop_per_image']:.2f} GFLOP/image; "
              f"MFU {mfu} of {result['peak']}")
    if result.get("targets"):
        print(format_targets(result["targets"]))


if __name__ == "__main__":
    main()
