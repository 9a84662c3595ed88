"""Safe, atomic checkpoints.

A run folder holds one checkpoint directory::

    run_dir/checkpoint/
        model.safetensors   the network's weights        (safetensors: tensors only)
        ema.safetensors     the EMA weights              (safetensors)
        state.pt            optimiser, scheduler, step, RNG states, loss-log position
                            (torch.save; read back with torch.load(weights_only=True))
        config.json         the TrainConfig that produced it

Saving writes a fresh ``checkpoint.tmp-XXXX`` directory (each file fsync'ed), then swaps
it in with two renames; the previous checkpoint is kept until the new one is complete,
so a crash at any moment leaves one whole checkpoint, never a mixture. Loading never
runs code from a file: weights come from safetensors and ``state.pt`` is read with
``weights_only=True``, which refuses pickles that reference Python callables.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import TrainConfig

CHECKPOINT = "checkpoint"
FILES = ("model.safetensors", "ema.safetensors", "state.pt", "config.json")
RUN_CONFIG = "config.json"          # the run's own copy, next to checkpoint/


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says what to do."""


@dataclass
class Checkpoint:
    path: Path
    config: TrainConfig
    model_state: dict
    ema_state: dict
    state: dict


# ---------------------------------------------------------------------- writing
def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _tensors(state_dict: dict) -> dict:
    """Contiguous CPU copies, as safetensors requires."""
    return {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}


def save_checkpoint(run_dir, *, model_state: dict, ema_state: dict, state: dict,
                    config: TrainConfig) -> Path:
    """Write ``run_dir/checkpoint`` atomically and return its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(CHECKPOINT + ".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=CHECKPOINT + ".tmp-", dir=run_dir))
    try:
        _write(tmp / "model.safetensors", st_save(_tensors(model_state)))
        _write(tmp / "ema.safetensors", st_save(_tensors(ema_state)))
        buffer = io.BytesIO()
        torch.save(state, buffer)
        _write(tmp / "state.pt", buffer.getvalue())
        _write(tmp / "config.json", config.to_json().encode())
        _fsync_dir(tmp)
        final = run_dir / CHECKPOINT
        old = None
        if final.exists():
            old = run_dir / f"{CHECKPOINT}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for previous in run_dir.glob(CHECKPOINT + ".old-*"):   # this one, or one a crash left
        shutil.rmtree(previous, ignore_errors=True)
    return final


def write_run_config(run_dir, config: TrainConfig) -> Path:
    """Write ``run_dir/config.json`` atomically (a fsync'ed temporary file, then
    ``os.replace``): a crash leaves the old file or the new one, never an empty one."""
    path = Path(run_dir) / RUN_CONFIG
    fd, tmp = tempfile.mkstemp(prefix=".config.json.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(config.to_json().encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(path.parent)
    return path


# ---------------------------------------------------------------------- reading
def find_checkpoint(path) -> Path:
    """The checkpoint directory for ``path`` (a run folder, the checkpoint folder, or a file
    inside it). If a crash hit between the two renames of a save, the kept previous
    checkpoint (``checkpoint.old-*``) is used."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if (path / "model.safetensors").exists() or (path / "state.pt").exists():
        return path
    if (path / CHECKPOINT).is_dir():
        return path / CHECKPOINT
    olds = sorted(path.glob(CHECKPOINT + ".old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        return olds[-1]
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: check the path, or train one first "
                              f"with `python -m diffusion_tutorial train --out {path}`.")
    raise CheckpointError(f"{path} holds no checkpoint (no {CHECKPOINT}/ folder): point to a run "
                          "folder written by `python -m diffusion_tutorial train`.")


def has_checkpoint(run_dir) -> bool:
    try:
        find_checkpoint(run_dir)
        return True
    except CheckpointError:
        return False


def _load_tensors(file: Path) -> dict:
    try:
        return st_load(file.read_bytes())
    except (SafetensorError, ValueError, OSError) as err:
        raise CheckpointError(f"{file} is truncated or not a safetensors file ({_short(err)}): "
                              "delete the checkpoint folder and retrain, or use another run.") from None


def _load_state(file: Path) -> dict:
    """``torch.load(weights_only=True)``: plain tensors and containers only, never code."""
    if not zipfile.is_zipfile(file):
        raise CheckpointError(
            f"refusing to load {file}: it is not a torch checkpoint written by diffusion_tutorial "
            "(truncated, or a plain pickle that could run code); delete the checkpoint folder and "
            "retrain, or use another run.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"refusing to load {file}: it contains Python objects or code, not plain tensors; "
            "only use checkpoints written by diffusion_tutorial from a source you trust.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{file} is truncated or corrupt ({_short(err)}): delete the "
                              "checkpoint folder and retrain, or use another run.") from None


def _short(err: Exception) -> str:
    return str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__


def load_checkpoint(path, config: Optional[TrainConfig] = None) -> Checkpoint:
    """Read a checkpoint (on CPU). With ``config``, refuse one written for a different
    config, naming the fields that differ (those a resume may change are ignored)."""
    ckpt = find_checkpoint(path)
    missing = [f for f in FILES if not (ckpt / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {ckpt} is incomplete (missing {', '.join(missing)}): "
                              "delete it and retrain, or use another run.")
    try:
        saved = _read_config(ckpt / "config.json")
    except (ValueError, TypeError, OSError) as err:
        raise CheckpointError(f"{ckpt / 'config.json'} is not a diffusion_tutorial config "
                              f"({_short(err)}): use a run folder written by this package.") from None
    if config is not None:
        check_same_config(saved, config, ckpt)
    weights = {name: _load_tensors(ckpt / name) for name in ("model.safetensors", "ema.safetensors")}
    for name, tensors in weights.items():
        check_finite(tensors, ckpt / name)
    return Checkpoint(ckpt, saved, weights["model.safetensors"], weights["ema.safetensors"],
                      _load_state(ckpt / "state.pt"))


def _read_config(file: Path) -> TrainConfig:
    """The :class:`TrainConfig` in a JSON file (ValueError/TypeError/OSError if it is not one)."""
    text = file.read_bytes().decode("utf-8")       # UnicodeDecodeError is a ValueError
    if not text.strip():
        raise ValueError("the file is empty")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"it holds a JSON {type(data).__name__}, not an object of fields")
    return TrainConfig.from_dict(data)


def read_run_config(run_dir) -> TrainConfig:
    """The settings of the run in ``run_dir``: its ``config.json``, or, if that file is
    damaged (empty, not UTF-8, not JSON), the copy inside its checkpoint, with a note on
    stderr. If neither can be read, the message names the file and the way out."""
    path = Path(run_dir) / RUN_CONFIG
    try:
        return _read_config(path)
    except FileNotFoundError:
        problem = f"{path} is missing"
    except (ValueError, TypeError, OSError) as err:
        problem = f"{path} cannot be read ({_short(err)})"
    try:
        copy = find_checkpoint(run_dir) / "config.json"
    except CheckpointError:
        raise CheckpointError(f"{problem} and {run_dir} holds no checkpoint to take the settings "
                              "from: start afresh with --overwrite (or a new --out), or give the "
                              "settings with --preset and flags.") from None
    try:
        config = _read_config(copy)
    except (ValueError, TypeError, OSError) as err:
        raise CheckpointError(f"{problem}, and so does the checkpoint's copy {copy} ({_short(err)}): "
                              "this run cannot be resumed; start afresh with --overwrite (or a new "
                              "--out).") from None
    print(f"note: {problem}; using the checkpoint's copy {copy} (config.json is rewritten when "
          "training starts).", file=sys.stderr)
    return config


def check_finite(state_dict: dict, file) -> None:
    """Refuse weights that hold NaN or inf (a run that diverged), naming the first such tensor
    by name (safetensors returns the tensors in no fixed order)."""
    bad = sorted(nonfinite_tensors(state_dict))
    if bad:
        tensor = state_dict[bad[0]]
        count = int((~torch.isfinite(tensor)).sum())
        more = f"; {len(bad) - 1} more tensor(s) too" if len(bad) > 1 else ""
        raise CheckpointError(
            f"{file} holds NaN or infinite weights ({bad[0]}: {count} of {tensor.numel()} values"
            f"{more}): the run diverged before this checkpoint was saved; retrain it with a lower "
            "--lr (or --grad-clip), or use another run.")


def check_same_config(saved: TrainConfig, config: TrainConfig, where="the checkpoint") -> None:
    diff = saved.differences(config)
    if diff:
        shown = ", ".join(f"{k}: {a!r} in checkpoint vs {b!r} now" for k, (a, b) in sorted(diff.items()))
        raise CheckpointError(f"{where} was written with a different config ({shown}): use the same "
                              "settings to resume, or a new --out folder to start afresh.")


def nonfinite_tensors(state_dict: dict) -> list:
    """Names of the floating-point tensors in ``state_dict`` that hold NaN or ±inf (one host
    read when all are finite, as they should be)."""
    floats = {k: v for k, v in state_dict.items() if v.is_floating_point() and v.numel()}
    if not floats:
        return []
    finite = torch.stack([torch.isfinite(v).all() for v in floats.values()])
    if bool(finite.all()):
        return []
    return [k for k, ok in zip(floats, finite.tolist()) if not ok]


def load_weights(module: torch.nn.Module, state_dict: dict, what: str = "checkpoint") -> None:
    """``module.load_state_dict`` with a one-line error for foreign or mismatched weights."""
    mismatch = weight_mismatch(module.state_dict(), state_dict)
    if mismatch:
        raise CheckpointError(f"the weights in {what} do not fit this model ({mismatch}): it comes "
                              "from a different model or config.")
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as err:
        raise CheckpointError(f"the weights in {what} do not fit this model "
                              f"({_short(err)}): it comes from a different model or config.") from None


def weight_mismatch(expected: dict, found: dict, show: int = 3) -> str:
    """What differs between two state_dicts, as text naming the first ``show`` tensors of
    each kind with their shapes; empty if names and shapes agree."""
    def shape(t) -> str:
        return "x".join(map(str, t.shape)) or "scalar"

    def first(kind: str, names: list, describe) -> str:
        more = f", and {len(names) - show} more" if len(names) > show else ""
        return f"{len(names)} {kind} ({', '.join(describe(n) for n in names[:show])}{more})"

    missing = [k for k in expected if k not in found]
    unexpected = sorted(k for k in found if k not in expected)    # files keep no order
    resized = [k for k in expected if k in found and expected[k].shape != found[k].shape]
    parts = []
    if missing:
        parts.append(first("missing", missing, lambda k: f"{k} {shape(expected[k])}"))
    if unexpected:
        parts.append(first("unexpected", unexpected, lambda k: f"{k} {shape(found[k])}"))
    if resized:
        parts.append(first("of another shape", resized, lambda k: f"{k} {shape(found[k])} in the "
                           f"file vs {shape(expected[k])} here"))
    return "; ".join(parts)
