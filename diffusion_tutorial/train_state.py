"""The state of a training run and its files: restore it from a checkpoint, save it to one.

A :class:`Run` holds what the loop in :mod:`diffusion_tutorial.train` updates: the network,
its EMA, the optimizer and schedule, the step, and the loss log. A checkpoint
(:mod:`diffusion_tutorial.checkpoint`) stores all of it with the RNG states and the loss log's
length, so that a resumed run continues exactly where the saved one stopped.
Chapter: The loss and training.
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
from .checkpoint import CheckpointError, load_weights, save_checkpoint
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
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))


def _read_log(path: Path, end: int) -> list:
    if not path.exists():
        return []
    with open(path, "rb") as f:
        data = f.read(end)
    return [json.loads(line)["loss"] for line in data.decode().splitlines() if line.strip()]


# ---------------------------------------------------------------------- the run
def memory_format(config: TrainConfig) -> torch.memory_format:
    """The layout of the network's weights and inputs: channels_last if the config asks."""
    return torch.channels_last if config.channels_last else torch.contiguous_format


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
    step: int = 0                     # optimizer steps done, over all sessions
    log_pos: int = 0                  # bytes of the loss log that belong to ``step``
    elapsed: float = 0.0              # wall-clock seconds of the earlier sessions
    saved_at: int = 0                 # step of the checkpoint on disk
    losses: list = field(default_factory=list)
    log_file: Optional[object] = None
    t0: float = field(default_factory=time.perf_counter)
    train_time: float = 0.0           # this session's seconds in train_step and record

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
        run.optimizer.load_state_dict(st["optimizer"])
        run.scheduler.load_state_dict(st["scheduler"])
        run.ema.load_state_dict(st["ema"])
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
        (run.run_dir / "config.json").write_text(run.config.to_json())
        with open(log_path, "a+b") as f:
            f.truncate(run.log_pos)
    distributed.barrier(run.info)
    run.log_file = open(log_path, "ab") if run.info.is_main else None
    try:
        yield run.log_file
    finally:
        if run.log_file is not None:
            run.log_file.close()


def save(run: Run) -> None:
    """Write a checkpoint at ``run.step`` (rank 0): weights, EMA, optimizer, scheduler,
    RNG states, and the loss log's length (flushed to disk first)."""
    if run.info.is_main:
        run.log_file.flush()
        os.fsync(run.log_file.fileno())
        state = {"step": run.step, "log_pos": run.log_file.tell(), "elapsed": run.wall_time(),
                 "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                 "ema": {k: v for k, v in run.ema.state_dict().items() if k != "weights"},
                 "rng": rng_state()}
        save_checkpoint(run.run_dir, model_state=run.model.state_dict(),
                        ema_state=run.ema.model.state_dict(), state=state, config=run.config)
    run.saved_at = run.step
