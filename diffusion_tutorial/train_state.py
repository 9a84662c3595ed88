"""The state of a training run and its files: restore it from a checkpoint, save it to one.

A :class:`Run` holds what the loop in :mod:`diffusion_tutorial.train` updates: the network,
its EMA, the optimizer and schedule, the step, and the loss log. A checkpoint
(:mod:`diffusion_tutorial.checkpoint`) stores all of it with the RNG states and the loss log's
length, so that a resumed run continues exactly where the saved one stopped.
Chapter: Training.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import distributed
from .checkpoint import (CheckpointError, load_weights, nonfinite_tensors, save_checkpoint,
                         write_run_config)
from .config import TrainConfig
from .distributed import DistInfo
from .ema import EMA
from .utils import set_seed

LOSS_LOG = "loss_log.jsonl"


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: a checkpoint was saved; resume with ``resume=True``."""


# ---------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """Python, NumPy and torch RNG states as plain tensors and tuples (weights_only-safe)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)}}


def set_rng_state(state: dict) -> None:
    """Restore the states :func:`rng_state` returned (CUDA's only where a GPU is present)."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))


def _read_log(path: Path, end: int) -> list:
    """The losses of the loss log's first ``end`` bytes: one per step up to the checkpoint."""
    if not path.exists():
        return []
    with open(path, "rb") as f:
        data = f.read(end)
    return [json.loads(line)["loss"] for line in data.decode().splitlines() if line.strip()]


# ---------------------------------------------------------------------- the run
@dataclass
class Run:
    """Everything one training run holds; the loop's named steps read and update it."""
    config: TrainConfig
    info: DistInfo
    device: torch.device
    model: torch.nn.Module            # the ε-network; its weights are what a checkpoint saves
    step_model: torch.nn.Module       # what a step calls: ``model``, DDP-wrapped under torchrun
    diffusion: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler      # loss scaling for fp16; a pass-through otherwise
    dtype: Optional[torch.dtype]      # autocast dtype (None: fp32)
    memory_format: torch.memory_format
    step: int = 0                     # optimizer steps done, over all sessions
    log_pos: int = 0                  # bytes of the loss log that belong to ``step``
    elapsed: float = 0.0              # wall-clock seconds of the earlier sessions
    saved_at: Optional[int] = None    # step of this run's checkpoint on disk (None: none yet)
    losses: list = field(default_factory=list)   # the losses read so far, one per step
    pending: list = field(default_factory=list)  # (step, lr, time, loss on the device), unread
    log_file: Optional[object] = None
    compiled: bool = False            # step_model is torch.compile'd
    eager_model: Optional[torch.nn.Module] = None  # kept until the compiled one has run once
    t0: float = field(default_factory=time.perf_counter)
    train_time: float = 0.0           # this session's seconds in train_step and read_losses

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

    def wall_time(self) -> float:
        """Seconds since the run began, over all sessions."""
        return self.elapsed + time.perf_counter() - self.t0

    def due(self, every: int) -> bool:
        return bool(every) and self.step % every == 0


def restore(run: Run, ckpt, resume: bool, progress: bool) -> None:
    """Continue from checkpoint ``ckpt`` (or start afresh if it is None): weights, EMA,
    optimizer, scheduler, step, loss-log position and RNG states."""
    config, info = run.config, run.info
    talk = info.is_main and progress
    if ckpt is None:
        if resume and talk:
            print(f"no checkpoint in {run.run_dir}: starting a new run")
        set_seed(config.seed + 7919 * info.rank)  # different noise on each rank
        return
    load_weights(run.model, ckpt.model_state, str(ckpt.path))
    load_weights(run.ema.model, ckpt.ema_state, str(ckpt.path))
    st = ckpt.state
    try:
        options = {k: v for k, v in run.optimizer.param_groups[0].items() if k in ("fused", "foreach")}
        run.optimizer.load_state_dict(st["optimizer"])
        for group in run.optimizer.param_groups:   # this device's kernels, not the saver's
            group.update(options)
        run.scheduler.load_state_dict(st["scheduler"])
        run.ema.load_state_dict(st["ema"])
        if "scaler" in st and run.scaler.is_enabled():
            run.scaler.load_state_dict(st["scaler"])
        run.step, run.log_pos, run.elapsed = int(st["step"]), int(st["log_pos"]), float(st["elapsed"])
        rng = st["rng"]
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{ckpt.path}/state.pt does not hold a training state ({err}): "
                              "it is not from diffusion_tutorial; start a new run.") from None
    run.saved_at = run.step
    if info.is_main:
        set_rng_state(rng)
    else:
        set_seed(config.seed + 7919 * info.rank + run.step)
    run.losses = _read_log(run.run_dir / LOSS_LOG, run.log_pos) if run.step else []
    if talk:
        print(f"resuming {run.run_dir} from step {run.step}")


# ---------------------------------------------------------------------- its files
@contextlib.contextmanager
def log_file(run: Run):
    """Write ``config.json``, cut the loss log back to the checkpoint's position (lines
    written after it are dropped) and keep it open for appending, on rank 0."""
    log_path = run.run_dir / LOSS_LOG
    if run.info.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(run.run_dir, run.config)
        with open(log_path, "a+b") as f:
            f.truncate(run.log_pos)
    distributed.barrier(run.info)
    run.log_file = open(log_path, "ab") if run.info.is_main else None
    try:
        yield run.log_file
    finally:
        if run.log_file is not None:
            run.log_file.close()


def diverged(run: Run, what: str) -> TrainingDiverged:
    """The error for a run whose loss or weights stopped being finite: what happened, what to
    change, and which checkpoint is left (or that none exists)."""
    config = run.config
    hint = f"lower the learning rate (lr={config.lr:g})"
    if config.grad_clip <= 0:
        hint += " or set grad_clip (e.g. 1.0)"
    if run.saved_at is None:
        kept = f"no checkpoint of this run exists yet in {run.run_dir}"
    else:
        kept = f"the last good checkpoint in {run.run_dir} was kept (step {run.saved_at})"
    return TrainingDiverged(f"{what}: {hint}; {kept}.")


def save(run: Run) -> None:
    """Write a checkpoint at ``run.step`` (rank 0): weights, EMA, optimizer, scheduler, loss
    scale, RNG states, and the loss log's length (flushed to disk first). Weights that hold
    NaN or inf are never saved: :class:`TrainingDiverged` is raised instead, on every rank."""
    bad = nonfinite_tensors({**run.model.state_dict(),
                             **{f"ema.{k}": v for k, v in run.ema.model.state_dict().items()}})
    if bad:
        raise diverged(run, f"the weights became NaN or infinite by step {run.step} ({bad[0]}), "
                            "so they were not saved")
    if run.info.is_main:
        run.log_file.flush()
        os.fsync(run.log_file.fileno())
        state = {"step": run.step, "log_pos": run.log_file.tell(), "elapsed": run.wall_time(),
                 "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                 "ema": {k: v for k, v in run.ema.state_dict().items() if k != "weights"},
                 "rng": rng_state()}
        if run.scaler.is_enabled():
            state["scaler"] = run.scaler.state_dict()
        save_checkpoint(run.run_dir, model_state=run.model.state_dict(),
                        ema_state=run.ema.model.state_dict(), state=state, config=run.config)
    run.saved_at = run.step
