"""Command line: ``python -m diffusion_tutorial train|sample`` (or ``diffusion-tutorial``).

    python -m diffusion_tutorial train                      # quick preset, mnist-sample, CPU
    python -m diffusion_tutorial train --preset full --out runs/mnist
    python -m diffusion_tutorial train --out runs/mnist --resume    # or --overwrite to start again
    python -m diffusion_tutorial sample --checkpoint runs/quick --sampler ddim --steps 50 --out grid.png
    torchrun --nproc_per_node=2 -m diffusion_tutorial train --preset full

Every config field has a flag (``--batch-size``, ``--timesteps``, ``--channel-mults 1,2,2``,
...) that overrides the preset. Bad input and known faults end with one line on stderr
that says what to do, and a non-zero exit code; set DIFFUSION_TUTORIAL_DEBUG=1 to see
the full traceback instead. Output paths are checked before any work
(:mod:`diffusion_tutorial.outputs`): ``train --out`` into a folder that holds a run needs
``--resume`` or ``--overwrite``, and a ``--out`` that is a file, lies under a file or is
read-only is named before training or sampling starts.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

from .checkpoint import has_checkpoint, read_run_config
from .config import TrainConfig, get_config
from .outputs import CLI_WORDS, check_output_file, check_run_dir
from .precision import COMPILE_MODES, PRECISIONS
from .runs import load_run, sample_images, save_samples
from .samplers import DEFAULT_SAMPLER, SAMPLERS
from .train import train

SKIP = {"run_dir", "preset"}
CHOICES = {"mixed_precision": PRECISIONS, "compile_mode": COMPILE_MODES}
# What a bare Ctrl-C means (one during the training steps says more: see train.interrupt).
INTERRUPTED = {"train": "interrupted; the run folder keeps its last checkpoint, if it has one: "
                        "resume with --resume",
               "sample": "interrupted; no samples were written"}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line (no usage block)."""

    def error(self, message: str):  # noqa: D401
        words = self.prog.split()  # "diffusion_tutorial" or "diffusion_tutorial train"
        command = " ".join(["python -m diffusion_tutorial", *words[1:], "--help"])
        self.exit(2, f"error: {message} (see `{command}`)\n")


def _tuple(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.strip().strip("()[]").replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, such as "
                                         f"1,2,2; got {text!r}") from None


def _path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("got an empty path (an unset shell variable?); give a "
                                         "file or folder name")
    return text


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(TrainConfig):
        if f.name in SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool) or f.type == "Optional[bool]":  # --x / --no-x (unset: auto)
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(default, tuple):
            parser.add_argument(flag, type=_tuple, default=None, metavar="N,N,...")
        elif f.name in CHOICES:
            parser.add_argument(flag, choices=CHOICES[f.name], default=None)
        elif f.type == "Optional[int]":
            parser.add_argument(flag, type=int, default=None)
        else:
            parser.add_argument(flag, type=type(default), default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="diffusion_tutorial", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    tr = sub.add_parser("train", help="train a diffusion model (default: quick preset on mnist-sample)")
    tr.add_argument("--preset", default=None,
                    help="tiny | quick | full | cifar10 (default quick; with --resume, the run's own)")
    tr.add_argument("--out", type=_path, default=None, help="run folder (default runs/<preset>)")
    tr.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace the run already in --out (its checkpoint, loss log, config and "
                         "grids are deleted once the new run has its data and model)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--summary", action="store_true", help="print the config and exit")
    _add_config_flags(tr)

    sa = sub.add_parser("sample", help="draw samples from a trained run")
    sa.add_argument("--checkpoint", type=_path, required=True,
                    help="run folder (or its checkpoint folder)")
    sa.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLERS,
                    help=f"default {DEFAULT_SAMPLER}, the best at few steps (Benchmarks page)")
    sa.add_argument("--steps", type=int, default=None,
                    help="sampling steps (default: ddim 50, dpm++2m(-sde) 20, heun 10); ddpm runs all T")
    sa.add_argument("--n", type=int, default=64, help="number of images")
    sa.add_argument("--out", type=_path, default="samples.png", help="PNG file to write")
    sa.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 deterministic)")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--class-label", type=int, default=None)
    sa.add_argument("--guidance-scale", type=float, default=1.0)
    sa.add_argument("--device", default="auto")
    sa.add_argument("--no-progress", action="store_true")
    parser.subcommands = {"train": tr, "sample": sa}
    return parser


def cmd_train(args) -> int:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name not in SKIP}
    overrides["run_dir"] = args.out or f"runs/{args.preset or 'quick'}"
    if not args.summary:                       # before any work: a taken, file or read-only --out
        check_run_dir(overrides["run_dir"], resume=args.resume, overwrite=args.overwrite,
                      words=CLI_WORDS)
    saved = Path(overrides["run_dir"]) / "config.json"
    if args.resume and args.preset is None and (saved.is_file() or has_checkpoint(saved.parent)):
        # Resume with the run's own settings; flags given now override them (e.g. --steps).
        config = read_run_config(overrides["run_dir"])
        config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
        config.validate()
    else:
        config = get_config(args.preset or "quick", **overrides)
    if args.summary:
        config.summary()
        return 0
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0 and not args.no_progress:
        print(f"training preset {config.preset!r} on {config.dataset} "
              f"({config.count_parameters():,} UNet parameters) -> {config.run_dir}", flush=True)
    result = train(config, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if rank == 0 and args.resume and not result.steps_done:
        print(f"{config.run_dir} has already finished: {result.step} steps done (--steps "
              f"{config.steps}); nothing to train. To train longer, resume with a larger --steps.")
    elif rank == 0:
        print(f"done: {result.step} steps ({result.steps_per_sec:.2f} steps/s); wrote "
              f"{Path(config.run_dir) / 'checkpoint'}, samples.png, loss.png, loss_log.jsonl")
    return 0


def cmd_sample(args) -> int:
    if args.n <= 0:
        raise ValueError(f"--n must be a positive number of images, got {args.n}.")
    if args.steps is not None and args.steps <= 0:
        raise ValueError(f"--steps must be positive, got {args.steps}.")
    if not (math.isfinite(args.eta) and args.eta >= 0):
        raise ValueError(f"--eta must be a finite number >= 0 (0: deterministic DDIM, 1: DDPM-like "
                         f"noise), got {args.eta}.")
    if not math.isfinite(args.guidance_scale):
        raise ValueError(f"--guidance-scale must be a finite number (1: no guidance), got "
                         f"{args.guidance_scale}.")
    check_output_file(args.out)
    config, ema_model, diffusion = load_run(args.checkpoint, args.device)
    x = sample_images(ema_model, diffusion, config, args.n, sampler=args.sampler,
                      steps=args.steps, eta=args.eta, seed=args.seed, class_label=args.class_label,
                      guidance_scale=args.guidance_scale, progress=not args.no_progress)
    path = save_samples(x, args.out)
    print(f"wrote {args.n} samples to {path}")
    return 0


def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["train", *argv]  # train is the default command: `... --preset tiny` trains
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand's parser, so the hint names its --help
        parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if os.environ.get("DIFFUSION_TUTORIAL_DEBUG"):
        return {"train": cmd_train, "sample": cmd_sample}[args.command](args)
    warnings.filterwarnings("ignore")
    try:
        return {"train": cmd_train, "sample": cmd_sample}[args.command](args)
    except KeyboardInterrupt as err:
        msg = str(err) or INTERRUPTED[args.command]
        print(f"stopped: {msg}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI promises one line, no traceback
        msg = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
