"""Shipped, ready-to-sample weights: ``load_pretrained("mnist")`` and checksum helpers.

Each shipped model is two files in ``diffusion_tutorial/pretrained/``:

* ``<name>.safetensors`` — the EMA weights of the UNet (stored in float16 to keep the
  package small; loaded back as float32),
* ``<name>.json`` — the UNet and diffusion settings, the full training config, the exact
  command that trained it, its measured sample-quality metrics and the SHA-256 checksum
  of the weights file.

The checksum is verified on every load, so a truncated or altered file fails with a
clear error instead of giving silently wrong samples. The weights were exported from a
training run with ``scripts/export_pretrained.py``. Chapter: Sampling.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from safetensors.torch import load_file

from .diffusion import GaussianDiffusion
from .unet import UNet
from .utils import get_device

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


class ChecksumError(RuntimeError):
    """A shipped file whose SHA-256 differs from the one recorded next to it."""


def sha256_file(path) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path, expected: str) -> None:
    """Raise :class:`ChecksumError` unless ``sha256(path) == expected``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing weights file {path}: reinstall the package.")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for {path.name}: expected sha256 {expected[:16]}..., got "
            f"{actual[:16]}...; the file is corrupt or was changed, reinstall the package.")


def available(directory=None) -> list[str]:
    """Names of the shipped diffusion models (the JSON files that describe a UNet)."""
    directory = Path(directory) if directory is not None else PRETRAINED_DIR
    names = []
    for p in sorted(directory.glob("*.json")):
        if "model" in json.loads(p.read_text()):
            names.append(p.stem)
    return names


def read_info(name: str = "mnist", directory=None) -> dict:
    """The JSON that describes shipped model ``name`` (no weights loaded)."""
    directory = Path(directory) if directory is not None else PRETRAINED_DIR
    path = directory / f"{name}.json"
    if not path.exists():
        raise ValueError(f"no pretrained model {name!r}: choose one of {available(directory)}.")
    return json.loads(path.read_text())


def build_diffusion(settings: dict) -> GaussianDiffusion:
    """A :class:`GaussianDiffusion` from the ``diffusion`` block of a model JSON, whose keys
    (``schedule``, ``timesteps``, ``variance``, ``beta_start``, ``beta_end``, and
    ``prediction``, absent in files from before it existed: ε) are the constructor's arguments."""
    return GaussianDiffusion(**settings)


def load_pretrained(name: str = "mnist", device="auto", directory: Optional[str] = None):
    """Load a shipped EMA model: returns ``(ema_model, diffusion, info)``.

    ``ema_model`` is the UNet ε_θ in eval mode on ``device`` (float32), ``diffusion`` the
    :class:`GaussianDiffusion` it was trained with, and ``info`` the JSON description
    (``command``, ``config``, ``metrics``, ...). The weights' SHA-256 is checked first and
    a mismatch raises :class:`ChecksumError`.

    >>> model, diffusion, info = load_pretrained("mnist")             # doctest: +SKIP
    >>> x0 = ddim_sample(diffusion, model, (16, 1, 28, 28), steps=50)  # doctest: +SKIP
    """
    directory = Path(directory) if directory is not None else PRETRAINED_DIR
    info = read_info(name, directory)
    path = directory / info["weights"]
    verify_checksum(path, info["sha256"])
    device = get_device(device)
    model = UNet(**info["model"])
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    diffusion = build_diffusion(info["diffusion"])
    return model.to(device).eval(), diffusion.to(device), info
