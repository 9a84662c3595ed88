"""Standard Inception FID of a trained CIFAR-10 run (optional: needs torch-fidelity or clean-fid).

What it measures: the Fréchet Inception Distance (Heusel et al. 2017) between ``--n``
samples of a run's EMA model and the 50,000 CIFAR-10 training images, computed on the
2048-d pool features of the ImageNet Inception-v3 network, the number the DDPM paper
reports (FID 3.17 with 50,000 samples, Ho et al. 2020, table 1). The reference is the
train split, as in DDPM and torch-fidelity's registered input ``cifar10-train``.

How it differs from the classifier-FID (``diffusion_tutorial.metrics``, used by
``bench_quality_vs_steps.py``): that one uses the features of a small MNIST classifier
trained by this package, runs offline on a CPU and is only comparable within this
book; this one uses Inception features and is comparable with published CIFAR-10
numbers, but needs one of the two packages and, once, internet to download the
Inception weights (and, for clean-fid, its precomputed CIFAR-10 statistics; for
torch-fidelity, CIFAR-10 itself unless ``--data-dir`` already holds it).

    pip install torch-fidelity        # or: pip install clean-fid
    python -m diffusion_tutorial train --preset cifar10 --out runs/cifar10     # on a GPU
    python benchmarks/bench_fid_cifar10.py runs/cifar10 [--n 10000] [--sampler ddim --steps 100]
    python benchmarks/bench_fid_cifar10.py runs/cifar10 --n 50000 --sampler ddpm   # as in papers

FID is biased upwards at small n: 10,000 samples give a higher number than the 50,000
used in papers, so compare runs at the same ``--n``. The two backends differ slightly:
torch-fidelity reproduces the original TensorFlow FID; clean-fid's default ``--cleanfid-mode
legacy_tensorflow`` does too, while ``clean`` uses its anti-aliased resize (a few tenths
different). The script is never needed by the book or the tests.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

BACKENDS = ("torch-fidelity", "clean-fid")
MODULES = {"torch-fidelity": "torch_fidelity", "clean-fid": "cleanfid"}
INSTALL = ("no FID backend installed: run `pip install torch-fidelity` (or `pip install clean-fid`); "
           "the first run needs internet once to download the Inception weights.")


class BenchError(SystemExit):
    """A one-line message for the user and exit code 2 (bad input or missing backend)."""

    def __init__(self, message: str):
        print(f"bench_fid_cifar10: {message}", file=sys.stderr)
        super().__init__(2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a folder written by `python -m diffusion_tutorial train "
                                   "--preset cifar10`")
    p.add_argument("--n", type=int, default=10_000,
                   help="number of samples (default 10000; papers use 50,000)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: 100 for ddim, all T for ddpm)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM η (0: deterministic)")
    p.add_argument("--batch", type=int, default=500, help="samples per sampling batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", choices=("auto",) + BACKENDS, default="auto")
    p.add_argument("--cleanfid-mode", choices=("legacy_tensorflow", "clean"),
                   default="legacy_tensorflow", help="clean-fid's feature mode")
    p.add_argument("--data-dir", default="data",
                   help="torchvision CIFAR-10 root for torch-fidelity's cifar10-train reference")
    p.add_argument("--keep-samples", default=None,
                   help="write the sample PNGs here and keep them (default: a temporary folder)")
    p.add_argument("--out-dir", default=None)
    from _common import add_note_option
    add_note_option(p)
    return p.parse_args(argv)


def check_run(run_dir) -> dict:
    """The run's config.json as a dict, refusing runs that are not on CIFAR-10 (read
    before any weights are loaded, so bad input fails at once)."""
    from diffusion_tutorial.checkpoint import CheckpointError, find_checkpoint
    try:
        config = json.loads((find_checkpoint(run_dir) / "config.json").read_text())
    except CheckpointError as err:
        raise BenchError(str(err)) from None
    except (OSError, ValueError) as err:
        raise BenchError(f"cannot read the config.json of {run_dir} ({err}): point to a run folder "
                         "written by `python -m diffusion_tutorial train`.") from None
    dataset = config.get("dataset")
    if dataset != "cifar10":
        raise BenchError(f"this script is for CIFAR-10 runs, but {run_dir} was trained on {dataset!r}: "
                         "measure MNIST runs with benchmarks/bench_quality_vs_steps.py "
                         "(the classifier-FID of diffusion_tutorial.metrics).")
    if config.get("image_size") not in (None, 32):
        raise BenchError(f"{run_dir} makes {config['image_size']}x{config['image_size']} images; the "
                         "CIFAR-10 reference statistics are for 32x32: use a run at the native size.")
    return config


def find_backend(choice: str) -> tuple[str, object]:
    """``(name, module)`` of the first importable backend (or the one asked for)."""
    names = BACKENDS if choice == "auto" else (choice,)
    for name in names:
        try:
            return name, importlib.import_module(MODULES[name])
        except ImportError:
            continue
    if choice == "auto":
        raise BenchError(INSTALL)
    raise BenchError(f"{choice} is not installed: run `pip install {choice}` (it needs internet once "
                     "to download the Inception weights), or use --backend auto.")


def _network_error(err: BaseException) -> bool:
    """True when ``err`` (or its cause) is a failed download: no network, or missing data."""
    while err is not None:
        if isinstance(err, OSError):          # URLError, ConnectionError, requests errors
            return True
        if isinstance(err, RuntimeError) and "not found" in str(err).lower():
            return True                        # torchvision: CIFAR-10 absent, download off
        err = err.__cause__ or err.__context__
    return False


def offline_exit(backend: str, err: BaseException) -> BenchError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    return BenchError(f"{backend} could not download its Inception weights or CIFAR-10 reference "
                      f"({type(err).__name__}: {first}): connect to the internet once (they are cached "
                      "afterwards), or measure offline with the classifier-FID instead.")


def preflight(backend: str, module, device, mode: str) -> None:
    """Fetch (or find cached) what the backend downloads, before spending time sampling."""
    try:
        if backend == "clean-fid":
            fid = importlib.import_module("cleanfid.fid")
            fid.get_reference_statistics("cifar10", 32, mode=mode, split="train")
            fid.build_feature_extractor(mode, device)
        else:  # torch-fidelity: building the extractor downloads the Inception weights
            utils = importlib.import_module("torch_fidelity.utils")
            utils.create_feature_extractor("inception-v3-compat", ["2048"],
                                           cuda=device.type == "cuda")
    except Exception as err:  # noqa: BLE001 - the backends raise many kinds
        if _network_error(err):
            raise offline_exit(backend, err) from None
        # another API version: skip the check, compute_fid reports download errors itself


def generate(model, diffusion, config: dict, args, device, folder: Path) -> int:
    """Sample ``args.n`` images batch by batch and write them as 32x32 PNGs into ``folder``."""
    import torch
    from PIL import Image
    from tqdm.auto import tqdm
    from diffusion_tutorial import sample
    from diffusion_tutorial.data import from_model_range

    num_classes = 10 if config.get("class_conditional") else None
    gen = torch.Generator().manual_seed(args.seed)
    written = 0
    with tqdm(total=args.n, desc=f"sampling ({args.sampler}, {args.steps} steps)") as bar:
        while written < args.n:
            b = min(args.batch, args.n - written)
            shape = (b, 3, 32, 32)
            y = (torch.arange(written, written + b, device=device) % num_classes
                 if num_classes else None)
            x_T = torch.randn(shape, generator=gen).to(device)
            x = sample(diffusion, model, shape, sampler=args.sampler, steps=args.steps,
                       eta=args.eta, y=y, generator=gen, device=device, x_T=x_T,
                       clip_denoised=True, progress=False)
            x01 = from_model_range(x.clamp(-1, 1).float().cpu())            # (b, 3, 32, 32) in [0, 1]
            u8 = (x01 * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (b, 32, 32, 3)
            for i, img in enumerate(u8):
                Image.fromarray(img).save(folder / f"{written + i:06d}.png")
            written += b
            bar.update(b)
    return written


def compute_fid(backend: str, module, folder: Path, args, device) -> float:
    """FID of the PNGs in ``folder`` against CIFAR-10 train (50,000 images)."""
    try:
        if backend == "torch-fidelity":
            metrics = module.calculate_metrics(
                input1=str(folder), input2="cifar10-train", fid=True,
                cuda=device.type == "cuda", batch_size=min(args.batch, 250),
                datasets_root=str(Path(args.data_dir).resolve()), samples_find_ext="png",
                verbose=False)
            return float(metrics["frechet_inception_distance"])
        fid = importlib.import_module("cleanfid.fid")
        return float(fid.compute_fid(str(folder), dataset_name="cifar10", dataset_res=32,
                                     dataset_split="train", mode=args.cleanfid_mode,
                                     device=device, batch_size=min(args.batch, 250),
                                     num_workers=0))
    except Exception as err:  # noqa: BLE001
        if _network_error(err):
            raise offline_exit(backend, err) from None
        raise


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.n < 2:
        raise BenchError(f"--n must be at least 2 (FID needs a covariance), got {args.n}.")
    config = check_run(args.run_dir)                  # cheap checks first,
    backend, module = find_backend(args.backend)      # then the optional dependency,
    from _common import machine, print_table, write_result
    from diffusion_tutorial.train import load_run
    from diffusion_tutorial.utils import get_device
    device = get_device(args.device)
    preflight(backend, module, device, args.cleanfid_mode)
    _, model, diffusion = load_run(args.run_dir, device)   # then the weights
    if args.steps is None:
        args.steps = 100 if args.sampler == "ddim" else diffusion.num_timesteps
    if args.sampler == "ddpm" and args.steps != diffusion.num_timesteps:
        raise BenchError(f"ancestral DDPM sampling runs all T = {diffusion.num_timesteps} steps: "
                         "drop --steps, or use --sampler ddim.")

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fid_samples_") as tmp:
        folder = Path(args.keep_samples or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        n = generate(model, diffusion, config, args, device, folder)
        sample_seconds = time.perf_counter() - t0
        fid_value = compute_fid(backend, module, folder, args, device)
    seconds = time.perf_counter() - t0
    row = {"n": n, "sampler": args.sampler, "steps": args.steps,
           "eta": args.eta if args.sampler == "ddim" else None, "backend": backend,
           "fid": fid_value, "seconds": seconds, "sample_seconds": sample_seconds}
    if backend == "clean-fid":
        row["cleanfid_mode"] = args.cleanfid_mode
    print_table([row], list(row))
    write_result("fid_cifar10", {**row, "reference": "cifar10-train (50,000 images)",
                                 "run_steps": config.get("steps"),
                                 "machine": machine(str(device), args.note)}, args.out_dir)


if __name__ == "__main__":
    main()
