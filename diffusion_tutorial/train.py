"""The training loop: L_simple with AdamW, warm-up, clipping, EMA, logging and checkpoints.

Each step follows DDPM Algorithm 1 (Ho et al. 2020): take a batch x_0, draw t uniformly
from 1..T and ε ~ N(0, I), and take a gradient step on ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²
(:meth:`GaussianDiffusion.p_losses`). Around it: a linear learning-rate warm-up, gradient
clipping, an EMA of the weights (:mod:`diffusion_tutorial.ema`), bf16 autocast on CUDA,
classifier-free-guidance label dropout (Ho & Salimans 2022), a JSON-lines loss log,
sample grids, and atomic checkpoints (:mod:`diffusion_tutorial.checkpoint`).

Runs are reproducible: step k always trains on the same examples (a permutation drawn
from (seed, epoch), sliced at k), and the RNG states are saved with every checkpoint,
so on a CPU a run interrupted and resumed ends with exactly the weights of an
uninterrupted one. Chapter: The loss and training.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from . import distributed as D
from .checkpoint import (CheckpointError, has_checkpoint, load_checkpoint, load_weights,
                         save_checkpoint)
from .config import ConfigError, TrainConfig
from .ema import EMA
from .samplers import DEFAULT_SAMPLER
from .utils import get_device, set_seed

LOSS_LOG = "loss_log.jsonl"


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: a checkpoint was saved; resume with ``resume=True``."""


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
    step: int = 0


# ---------------------------------------------------------------------- data order
def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0,
                  world_size: int = 1, _cache: dict = {}) -> list[int]:  # noqa: B006
    """The dataset indices of ``rank``'s batch at training step ``step`` (0-based).

    One epoch is a permutation of the n examples drawn from (seed, epoch), cut into
    global batches of ``batch_size · world_size``; rank r takes slice r of each. So the
    batch at any step is known without replaying the earlier ones: that is what lets a
    resumed run continue with exactly the examples an uninterrupted run would see."""
    global_batch = batch_size * world_size
    per_epoch = n // global_batch
    if per_epoch < 1:
        raise ConfigError(f"the dataset has {n} examples, fewer than one batch of {global_batch}: "
                          "lower batch_size.")
    epoch, k = divmod(step, per_epoch)
    key = (n, seed, epoch)
    if key not in _cache:
        _cache.clear()
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        _cache[key] = torch.randperm(n, generator=g)
    start = k * global_batch + rank * batch_size
    return _cache[key][start:start + batch_size].tolist()


class StepBatchSampler(Sampler):
    """Yields :func:`batch_indices` for steps ``start .. end - 1``."""

    def __init__(self, n, batch_size, seed, start, end, rank=0, world_size=1):
        self.args = (n, batch_size, seed, rank, world_size)
        self.start, self.end = start, end

    def __iter__(self):
        n, b, seed, rank, ws = self.args
        for step in range(self.start, self.end):
            yield batch_indices(n, b, step, seed, rank, ws)

    def __len__(self):
        return max(0, self.end - self.start)


# ---------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """Python, NumPy and torch RNG states as plain tensors and tuples (weights_only-safe)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)}}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))


# ---------------------------------------------------------------------- images
@torch.no_grad()
def sample_images(model, diffusion, config: TrainConfig, n: int, *, sampler: str = DEFAULT_SAMPLER,
                  steps: Optional[int] = None, eta: float = 0.0, seed: int = 0,
                  class_label: Optional[int] = None, guidance_scale: float = 1.0,
                  clip_denoised: bool = True, progress: bool = False) -> torch.Tensor:
    """n samples in [−1, 1], shape (n, C, H, W), from ``model`` (usually the EMA model).
    A class-conditional model gets labels 0, 1, 2, ... in turn, or ``class_label``.
    ``clip_denoised`` clips each predicted x̂_0 to [−1, 1], as DDPM's reference code does."""
    from .samplers import sample
    device = next(model.parameters()).device
    y = None
    if config.num_classes:
        if class_label is not None:
            if not 0 <= class_label < config.num_classes:
                raise ValueError(f"class_label must be in 0..{config.num_classes - 1}, got {class_label}.")
            y = torch.full((n,), class_label, dtype=torch.long, device=device)
        else:
            y = torch.arange(n, device=device) % config.num_classes
    elif class_label is not None:
        raise ValueError("this model is unconditional: drop --class-label, or train with "
                         "--class-conditional.")
    was_training = model.training
    model.eval()
    shape = (n, config.channels, config.resolution, config.resolution)
    gen = torch.Generator().manual_seed(seed)
    if sampler == "ddpm" and steps is None:
        steps = diffusion.num_timesteps
    x = sample(diffusion, model, shape, sampler=sampler, steps=steps, eta=eta, y=y,
               guidance_scale=guidance_scale, generator=gen, device=device,
               clip_denoised=clip_denoised, progress=progress)
    model.train(was_training)
    return x.clamp(-1, 1).float().cpu()


def save_samples(x: torch.Tensor, path, nrow: Optional[int] = None) -> Path:
    """Save images in [−1, 1] as one PNG grid (``nrow`` per row, default √n)."""
    from .plotting import save_grid
    return save_grid(x, path, nrow=nrow or max(1, int(math.sqrt(len(x)))))


def save_loss_plot(losses: list, path) -> None:
    """Save the loss curve (one value per step) as a PNG and close the figure."""
    import matplotlib.pyplot as plt
    from .plotting import plot_loss
    if losses:
        plt.close(plot_loss(losses, path=path))


# ---------------------------------------------------------------------- the loop
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


def _read_log(path: Path, end: int) -> list:
    if not path.exists():
        return []
    with open(path, "rb") as f:
        data = f.read(end)
    return [json.loads(line)["loss"] for line in data.decode().splitlines() if line.strip()]


def train(config: TrainConfig, resume: bool = False, progress: bool = True,
          model: Optional[torch.nn.Module] = None, dataset=None) -> TrainResult:
    """Train a diffusion model as ``config`` says and return a :class:`TrainResult`.

    Args:
        config: a :class:`TrainConfig` (``get_config("quick")`` and friends).
        resume: continue from ``config.run_dir/checkpoint`` if there is one (the config
            must match it, except fields such as ``steps``); otherwise start afresh.
        progress: show a tqdm progress bar with the loss.
        model: an ε-network to train instead of the config's UNet.
        dataset: a dataset of (x in [−1, 1], label) to use instead of ``config.dataset``.

    Raises:
        TrainingDiverged: the loss became NaN/inf (the message names the step).
        TrainingInterrupted: Ctrl-C; a checkpoint was saved first.
    """
    config.validate(check_model=model is None)
    info = D.init_distributed(config.device)
    try:
        return _train(config, resume, progress, model, dataset, info)
    finally:
        D.cleanup(info)


def _train(config, resume, progress, model, dataset, info) -> TrainResult:
    main = info.is_main
    device = info.device or get_device(config.device)
    run_dir = Path(config.run_dir)
    ckpt = load_checkpoint(run_dir, config) if resume and has_checkpoint(run_dir) else None
    set_seed(config.seed)                       # same initial weights on every rank
    if dataset is None:
        from .data import get_dataset
        dataset = get_dataset(config.dataset, config.data_dir, train=True)
    model = (model if model is not None else config.build_model()).to(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    diffusion = config.build_diffusion().to(device)
    ema = EMA(model, config.ema_decay, config.ema_warmup)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_lambda(config.warmup_steps, config.steps, config.lr_schedule))

    step, log_pos, elapsed = 0, 0, 0.0
    log_path = run_dir / LOSS_LOG
    if ckpt is not None:
        load_weights(model, ckpt.model_state, str(ckpt.path))
        load_weights(ema.model, ckpt.ema_state, str(ckpt.path))
        st = ckpt.state
        try:
            optimizer.load_state_dict(st["optimizer"])
            scheduler.load_state_dict(st["scheduler"])
            ema.load_state_dict(st["ema"])
            step, log_pos, elapsed = int(st["step"]), int(st["log_pos"]), float(st["elapsed"])
            rng = st["rng"]
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{ckpt.path}/state.pt does not hold a training state ({err}): "
                                  "it is not from diffusion_tutorial; start a new run.") from None
        if main:
            set_rng_state(rng)
        else:
            set_seed(config.seed + 7919 * info.rank + step)
        if main and progress:
            print(f"resuming {run_dir} from step {step}")
    else:
        if resume and main and progress:
            print(f"no checkpoint in {run_dir}: starting a new run")
        set_seed(config.seed + 7919 * info.rank)  # different noise on each rank
    losses = _read_log(log_path, log_pos) if step else []
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config.to_json())
        with open(log_path, "a+b") as f:
            f.truncate(log_pos)               # drop lines written after the checkpoint
    D.barrier(info)

    ddp_model = D.wrap_model(model, info)
    loader = DataLoader(dataset, batch_sampler=StepBatchSampler(
        len(dataset), config.batch_size, config.seed, step, config.steps, info.rank, info.world_size),
        num_workers=config.num_workers, generator=torch.Generator().manual_seed(config.seed),
        pin_memory=device.type == "cuda", persistent_workers=False)
    use_bf16 = config.mixed_precision == "bf16" or (config.mixed_precision == "auto" and device.type == "cuda")
    size = config.resolution
    num_classes = config.num_classes

    def save(at_step: int) -> None:
        if not main:
            return
        log_file.flush()
        os.fsync(log_file.fileno())
        state = {"step": at_step, "log_pos": log_file.tell(), "elapsed": elapsed + time.perf_counter() - t0,
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "ema": {k: v for k, v in ema.state_dict().items() if k != "weights"},
                 "rng": rng_state()}
        save_checkpoint(run_dir, model_state=model.state_dict(), ema_state=ema.model.state_dict(),
                        state=state, config=config)

    stop = {"flag": False}
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        def on_sigint(signum, frame):
            stop["flag"] = True
            signal.signal(signal.SIGINT, old_handler or signal.default_int_handler)
        old_handler = signal.signal(signal.SIGINT, on_sigint)

    log_file = open(log_path, "ab") if main else None
    bar = tqdm(total=config.steps, initial=step, disable=not (progress and main),
               desc="training", dynamic_ncols=True, file=sys.stdout)
    t0 = time.perf_counter()
    train_time, start_step, saved_at = 0.0, step, step
    model.train()
    try:
        for x, y in loader:
            tick = time.perf_counter()
            x = x.to(device, non_blocking=True)
            if x.shape[-1] != size:           # e.g. 28x28 digits trained at 8x8 in tests
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)
            x = x.contiguous(memory_format=memory_format)  # (B, C, H, W) in [-1, 1]
            labels = None
            if num_classes:
                labels = torch.as_tensor(y, device=device).long()
                drop = torch.rand(labels.shape, device=device) < config.p_uncond
                labels = torch.where(drop, torch.full_like(labels, num_classes), labels)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = diffusion.p_losses(ddp_model, x, y=labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            # (loss, stop flag) averaged over ranks, so every rank takes the same decision
            shared = D.all_reduce_mean(torch.stack([loss.detach().float(),
                                                    torch.tensor(float(stop["flag"]), device=device)]), info)
            value = float(shared[0])
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"the loss became {value} at step {step + 1}: lower the learning rate "
                    f"(lr={config.lr:g}) or set grad_clip; the last good checkpoint in "
                    f"{run_dir} was kept (step {saved_at}).")
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            ema.update(model)
            step += 1
            train_time += time.perf_counter() - tick
            losses.append(value)
            if main:
                log_file.write((json.dumps({"step": step, "loss": value, "lr": lr,
                                            "time": round(elapsed + time.perf_counter() - t0, 3)})
                                + "\n").encode())
            bar.update(1)
            if step % config.log_every == 0:
                if main:
                    log_file.flush()
                bar.set_postfix(loss=f"{sum(losses[-config.log_every:]) / config.log_every:.4f}",
                                refresh=False)
            if main and config.sample_every and step % config.sample_every == 0 and step < config.steps:
                x_s = sample_images(ema.model, diffusion, config, config.n_samples,
                                    steps=config.sample_steps, seed=config.seed)
                save_samples(x_s, run_dir / "samples" / f"step_{step:06d}.png")
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save(step)
                saved_at = step
            if float(shared[1]) > 0:
                if saved_at != step:
                    save(step)
                raise TrainingInterrupted(
                    f"interrupted at step {step}; checkpoint saved in {run_dir}: resume with "
                    "--resume (or train(config, resume=True)).")
        if saved_at != step or not has_checkpoint(run_dir):
            save(step)
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
        if old_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, old_handler)

    if main:
        x_s = sample_images(ema.model, diffusion, config, config.n_samples,
                            steps=config.sample_steps, seed=config.seed)
        save_samples(x_s, run_dir / "samples.png")
        save_loss_plot(losses, run_dir / "loss.png")
    D.barrier(info)
    done = step - start_step
    return TrainResult(model=model.eval(), ema_model=ema.model, diffusion=diffusion, losses=losses,
                       run_dir=run_dir, steps_per_sec=done / train_time if train_time > 0 else float("nan"),
                       config=config, step=step)


def load_run(run_dir, device: str = "auto"):
    """``(config, ema_model, diffusion)`` from a run folder's checkpoint, ready to sample."""
    from .checkpoint import load_checkpoint as _load
    ckpt = _load(run_dir)
    config = ckpt.config
    device = get_device(device)
    model = config.build_model()
    load_weights(model, ckpt.ema_state, str(ckpt.path))
    return config, model.to(device).eval(), config.build_diffusion().to(device)
