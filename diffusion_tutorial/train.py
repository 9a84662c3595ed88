"""The training loop: L_simple with AdamW, warm-up, clipping, EMA, logging and checkpoints.

Each step follows DDPM Algorithm 1 (Ho et al. 2020): take a batch x_0, draw t uniformly
from 1..T and ε ~ N(0, I), and take a gradient step on ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²
(:meth:`GaussianDiffusion.p_losses`). Around it: a linear learning-rate warm-up, gradient
clipping, an EMA of the weights (:mod:`diffusion_tutorial.ema`), mixed precision and
``torch.compile`` where the device runs them well (:mod:`diffusion_tutorial.precision`),
classifier-free-guidance label dropout (Ho & Salimans 2022), a JSON-lines loss log,
sample grids, and atomic checkpoints (:mod:`diffusion_tutorial.checkpoint`).

The loop in :func:`_train` reads top to bottom: :func:`build` the objects, :func:`restore`
a checkpoint, then for each batch :func:`train_step`, now and then :func:`read_losses`,
:func:`save` and a sample grid. A step never waits for the GPU: its loss stays on the device
until the next read (every ``log_every`` steps, and before any checkpoint or grid), which is
also where NaN is caught. Runs are reproducible: step k always trains on the same examples
(:mod:`diffusion_tutorial.batches`), and the RNG states are saved with every checkpoint, so
on a CPU a run interrupted and resumed ends with exactly the weights of an uninterrupted one.
Chapter: Training.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import distributed, precision
from .batches import DeviceBatches, StepBatchSampler, batch_indices  # noqa: F401 - public here
from .checkpoint import has_checkpoint, load_checkpoint
from .config import TrainConfig
from .data import ImageDataset, get_dataset
from .distributed import DistInfo
from .ema import EMA
from .outputs import RunExistsError, check_run_dir, clear_run  # noqa: F401 - RunExistsError: public
from .runs import load_run, sample_images, save_loss_plot, save_samples  # noqa: F401 - public here
from .train_state import (LOSS_LOG, Run, TrainingDiverged, TrainingInterrupted,  # noqa: F401
                          diverged, log_file, restore, rng_state, save, set_rng_state)
from .utils import get_device, set_seed


@dataclass
class TrainResult:
    """What :func:`train` returns."""
    model: torch.nn.Module
    ema_model: torch.nn.Module
    diffusion: torch.nn.Module
    losses: list = field(default_factory=list)     # one L_simple value per step, whole run
    run_dir: Path = Path(".")
    steps_per_sec: float = float("nan")            # this session's training steps only
    config: Optional[TrainConfig] = None
    step: int = 0                                  # steps done, over all sessions
    steps_done: int = 0                            # this session's steps (0: it had finished)


# ---------------------------------------------------------------------- pieces of a step
def warmup_lambda(warmup_steps: int, total_steps: int = 0, schedule: str = "constant"):
    """Learning-rate factor: linear from 1/warmup to 1 over ``warmup_steps``, then 1
    (``"constant"``, as DDPM) or ½(1 + cos(π p)) with p the fraction of the post-warm-up steps
    done (``"cosine"``: 0 at ``total_steps``; a resumed run with more steps re-stretches it)."""
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine" and total_steps > warmup_steps:
            p = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
            return 0.5 * (1 + math.cos(math.pi * p))
        return 1.0
    return factor


def drop_labels(labels: torch.Tensor, num_classes: int, p_uncond: float,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Classifier-free guidance training (Ho & Salimans 2022, Algorithm 1): each label is
    replaced by the null class ``num_classes`` with probability ``p_uncond``, so one network
    learns both ε(x_t, t, y) and ε(x_t, t). ``generator`` draws the coin flips (on its device)."""
    device = generator.device if generator is not None else labels.device
    drop = torch.rand(labels.shape, generator=generator, device=device).to(labels.device) < p_uncond
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


# ---------------------------------------------------------------------- the run
def build(config: TrainConfig, model: Optional[torch.nn.Module], info: DistInfo) -> Run:
    """The network (the config's UNet unless ``model`` is given), the diffusion, the EMA,
    AdamW (fused on CUDA), the warm-up schedule and the mixed precision, on this rank's device."""
    device = info.device or get_device(config.device)
    layout = (torch.channels_last if precision.use_channels_last(config.channels_last, device)
              else torch.contiguous_format)
    model = (model if model is not None else config.build_model()).to(device, memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  **precision.adamw_options(device))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_lambda(config.warmup_steps, config.steps, config.lr_schedule))
    dtype = precision.autocast_dtype(device, config.mixed_precision)
    return Run(config, info, device, model, model, config.build_diffusion().to(device),
               EMA(model, config.ema_decay, config.ema_warmup), optimizer, scheduler,
               precision.grad_scaler(device, dtype), dtype, layout)


def compile_network(run: Run) -> None:
    """Wrap the network in DDP under torchrun, then in ``torch.compile`` if the config (or
    auto: CUDA) asks for it. Compilation happens at the first step; see :func:`forward_backward`."""
    run.step_model = distributed.wrap_model(run.model, run.info)
    config = run.config
    if not precision.use_compile(config.compile, run.device):
        return
    mode = None if config.compile_mode == "default" else config.compile_mode
    try:
        run.step_model, run.eager_model = torch.compile(run.step_model, mode=mode), run.step_model
        run.compiled = True
    except Exception as err:  # noqa: BLE001 - e.g. a Python version dynamo does not support
        _say_compile_failed(run, err)


def _say_compile_failed(run: Run, err: Exception) -> None:
    if run.info.is_main:
        reason = (str(err).strip().splitlines() or [""])[0][:160]
        print(f"note: torch.compile failed ({type(err).__name__}: {reason}); training without it "
              "(--no-compile skips the attempt).", file=sys.stderr, flush=True)


def step_batches(run: Run, dataset):
    """(x, y) batches for steps ``run.step .. config.steps − 1`` in the reproducible order: an
    in-memory ImageDataset is gathered on the device, any other dataset goes through a DataLoader."""
    config, info = run.config, run.info
    args = (config.batch_size, config.seed, run.step, config.steps, info.rank, info.world_size)
    if isinstance(dataset, ImageDataset):
        return DeviceBatches(dataset, run.device, *args)
    return DataLoader(dataset, batch_sampler=StepBatchSampler(len(dataset), *args),
                      num_workers=config.num_workers,
                      generator=torch.Generator().manual_seed(config.seed),
                      pin_memory=run.device.type == "cuda", persistent_workers=False)


# ---------------------------------------------------------------------- one step
def prepare_batch(run: Run, x: torch.Tensor, y):
    """The batch on the device at the model's size and layout, with labels dropped to the null
    class for guidance (None for an unconditional model)."""
    config, device = run.config, run.device
    x = x.to(device, non_blocking=True)
    size = config.resolution
    if x.shape[-1] != size:                   # e.g. 28x28 digits trained at 8x8 in tests
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x.contiguous(memory_format=run.memory_format)  # (B, C, H, W) in [-1, 1]
    labels = None
    if config.num_classes:
        labels = drop_labels(torch.as_tensor(y, device=device).long(), config.num_classes,
                             config.p_uncond)
    return x, labels


def forward_backward(run: Run, x: torch.Tensor, labels) -> torch.Tensor:
    """L_simple under autocast and its (loss-scaled) gradient; returns the loss. The first call
    of a compiled network compiles it: if that fails, say so in one line and redo the call
    eagerly with the same random draws, so the run is the one an eager run would be."""
    if run.eager_model is None:
        return _forward_backward(run, x, labels)
    eager, run.eager_model = run.eager_model, None
    state = rng_state()
    try:
        return _forward_backward(run, x, labels)
    except Exception as err:  # noqa: BLE001 - any compiler failure; eager shows real errors
        set_rng_state(state)
        run.step_model, run.compiled = eager, False
        _say_compile_failed(run, err)
        return _forward_backward(run, x, labels)


def _forward_backward(run: Run, x: torch.Tensor, labels) -> torch.Tensor:
    if run.compiled and run.config.compile_mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs: this step's buffers are new
    with precision.autocast(run.device, run.dtype):
        loss = run.diffusion.p_losses(run.step_model, x, y=labels)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    return loss


def train_step(run: Run, x: torch.Tensor, y) -> None:
    """One step of DDPM Algorithm 1 on a batch (x in [−1, 1], labels y): the loss L_simple,
    its gradient (clipped to norm ``grad_clip``), an AdamW step, the learning-rate schedule and
    the EMA. The loss stays on the device (``run.pending``) until :func:`read_losses`: no step
    waits for the GPU."""
    x, labels = prepare_batch(run, x, y)
    lr = run.optimizer.param_groups[0]["lr"]
    loss = forward_backward(run, x, labels)
    if run.config.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)    # clip the true gradient, not the scaled one
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    run.scaler.step(run.optimizer)            # skips the step if fp16 gradients overflowed
    run.scaler.update()
    run.scheduler.step()
    run.ema.update(run.model)
    run.step += 1
    run.pending.append((run.step, lr, round(run.wall_time(), 3), loss.detach()))


def reading_due(run: Run, stop) -> bool:
    """Read the losses now? At log, sample and checkpoint steps, at the last step, and at once
    on Ctrl-C in a single process (under torchrun the ranks agree at the next of those steps)."""
    config = run.config
    return (run.due(config.log_every) or run.due(config.sample_every)
            or run.due(config.checkpoint_every) or run.step >= config.steps
            or (stop.requested and not run.info.enabled))


def read_losses(run: Run, stop, bar) -> bool:
    """Read the pending steps' losses in one transfer (averaged over ranks, with the Ctrl-C
    flag), stop on NaN/inf naming the step, write their log lines and move the progress bar.
    Returns whether Ctrl-C was pressed on any rank."""
    pending, run.pending = run.pending, []
    flag = torch.tensor([float(stop.requested)], device=run.device)
    losses = [loss.float().reshape(1) for *_, loss in pending]
    values = distributed.all_reduce_mean(torch.cat([*losses, flag]), run.info).tolist()
    stopping = values.pop() > 0
    for (step, *_), value in zip(pending, values):
        if not math.isfinite(value):
            raise diverged(run, f"the loss became {value} at step {step} (losses of steps "
                                f"{pending[0][0]}-{pending[-1][0]} read together)")
    run.losses.extend(values)
    if run.info.is_main:
        lines = [{"step": step, "loss": value, "lr": lr, "time": t}
                 for (step, lr, t, _), value in zip(pending, values)]
        run.log_file.write("".join(json.dumps(line) + "\n" for line in lines).encode())
        run.log_file.flush()
    bar.update(len(values))
    recent = run.losses[-run.config.log_every:]
    if recent:
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)
    return stopping


# ---------------------------------------------------------------------- around the steps
def write_sample_grid(run: Run, path: Path) -> None:
    """DDIM samples of the EMA model (rank 0), as a PNG grid."""
    if run.info.is_main:
        config = run.config
        x = sample_images(run.ema.model, run.diffusion, config, config.n_samples,
                          steps=config.sample_steps, seed=config.seed)
        save_samples(x, path)


def interrupt(run: Run) -> None:
    """Ctrl-C: save a checkpoint (unless one was just written), then stop."""
    if run.saved_at != run.step:
        save(run)
    raise TrainingInterrupted(f"interrupted at step {run.step}; checkpoint saved in {run.run_dir}: "
                              "resume with --resume (or train(config, resume=True)).")


@contextlib.contextmanager
def ctrl_c_flag():
    """While inside, Ctrl-C (SIGINT) sets ``.requested`` instead of raising, so the loop can
    save first; a second Ctrl-C raises at once. The caller's handler is restored after."""
    stop = SimpleNamespace(requested=False)
    if threading.current_thread() is not threading.main_thread():
        yield stop                            # signals only reach the main thread
        return

    def on_sigint(signum, frame):
        stop.requested = True
        signal.signal(signal.SIGINT, old_handler or signal.default_int_handler)
    old_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        if old_handler is not None:          # None: a handler not installed from Python
            signal.signal(signal.SIGINT, old_handler)


# ---------------------------------------------------------------------- the loop
def train(config: TrainConfig, resume: bool = False, progress: bool = True,
          model: Optional[torch.nn.Module] = None, dataset=None,
          overwrite: bool = False) -> TrainResult:
    """Train a diffusion model as ``config`` says and return a :class:`TrainResult`.

    Args:
        config: a :class:`TrainConfig` (``get_config("quick")`` and friends).
        resume: continue from ``config.run_dir/checkpoint`` if there is one (the config
            must match it, except fields such as ``steps``); otherwise start afresh.
        progress: show a tqdm progress bar with the loss.
        model: an ε-network to train instead of the config's UNet.
        dataset: a dataset of (x in [−1, 1], label) to use instead of ``config.dataset``.
        overwrite: replace a run already in ``config.run_dir``; its files are deleted only
            when the new run has its data and model (:func:`diffusion_tutorial.outputs.clear_run`).
            Without it (or ``resume``), a folder that holds a run is refused.

    Raises:
        RunExistsError: ``config.run_dir`` holds a run, and neither resume nor overwrite is set.
        TrainingDiverged: the loss became NaN/inf (the message names the step).
        TrainingInterrupted: Ctrl-C; a checkpoint was saved first.
    """
    config.validate(check_model=model is None)
    check_run_dir(config.run_dir, resume=resume, overwrite=overwrite)
    info = distributed.init_distributed(config.device)
    try:
        return _train(config, resume, progress, model, dataset, info, overwrite)
    finally:
        distributed.cleanup(info)


def _train(config, resume, progress, model, dataset, info, overwrite=False) -> TrainResult:
    run_dir = Path(config.run_dir)
    ckpt = load_checkpoint(run_dir, config) if resume and has_checkpoint(run_dir) else None
    set_seed(config.seed)                       # same initial weights on every rank
    if dataset is None:
        dataset = get_dataset(config.dataset, config.data_dir, train=True)
    run = build(config, model, info)
    restore(run, ckpt, resume, progress)
    if overwrite and info.is_main:
        clear_run(run_dir)                      # the new run starts: the old one goes
    start_step = run.step
    if info.is_main and progress and start_step < config.steps:
        print(describe(run))
    with log_file(run), ctrl_c_flag() as stop, tqdm(
            total=config.steps, initial=run.step, disable=not (progress and info.is_main),
            desc="training", dynamic_ncols=True, file=sys.stdout) as bar:
        compile_network(run)
        run.model.train()
        run.t0 = time.perf_counter()
        for x, y in step_batches(run, dataset):
            tick = time.perf_counter()
            train_step(run, x, y)
            stopping = reading_due(run, stop) and read_losses(run, stop, bar)
            run.train_time += time.perf_counter() - tick
            if run.due(config.sample_every) and run.step < config.steps:
                write_sample_grid(run, run_dir / "samples" / f"step_{run.step:06d}.png")
            if run.due(config.checkpoint_every):
                save(run)
            if stopping:
                interrupt(run)
        if run.saved_at != run.step:
            save(run)
    done, seconds = run.step - start_step, run.train_time
    if done or ckpt is None:                    # a finished run keeps its grid and plot
        write_sample_grid(run, run_dir / "samples.png")
        if info.is_main:
            save_loss_plot(run.losses, run_dir / "loss.png")
    distributed.barrier(info)
    return TrainResult(model=run.model.eval(), ema_model=run.ema.model, diffusion=run.diffusion,
                       losses=run.losses, run_dir=run_dir, config=config, step=run.step,
                       steps_per_sec=done / seconds if seconds > 0 else float("nan"),
                       steps_done=done)


def describe(run: Run) -> str:
    """One line: the device and what makes it fast (precision, compile, memory layout)."""
    parts = [precision.describe(run.dtype, run.scaler)]
    if precision.use_compile(run.config.compile, run.device):
        parts.append(f"torch.compile ({run.config.compile_mode})")
    if run.memory_format == torch.channels_last:
        parts.append("channels_last")
    return f"training on {run.device}: " + ", ".join(parts)
