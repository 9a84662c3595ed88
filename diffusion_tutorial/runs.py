"""Using a finished (or running) training run: load it, sample from it, save grids and plots.

A run folder is what :func:`diffusion_tutorial.train.train` writes (``config.json``,
``checkpoint/``, ``loss_log.jsonl``, sample grids). Sampling from it is not training, so
these helpers live here and both the trainer and the command line import them.
Chapter: Sampling.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from .checkpoint import load_checkpoint, load_weights
from .config import TrainConfig
from .plotting import plot_loss, save_grid
from .precision import autocast, autocast_dtype
from .samplers import DEFAULT_SAMPLER, sample
from .utils import get_device

import matplotlib.pyplot as plt  # noqa: E402,I001 - after .plotting, which picks the backend


@torch.no_grad()
def sample_images(model, diffusion, config: TrainConfig, n: int, *, sampler: str = DEFAULT_SAMPLER,
                  steps: Optional[int] = None, eta: float = 0.0, seed: int = 0,
                  class_label: Optional[int] = None, guidance_scale: float = 1.0,
                  clip_denoised: bool = True, progress: bool = False) -> torch.Tensor:
    """n samples in [−1, 1], shape (n, C, H, W), from ``model`` (usually the EMA model).
    A class-conditional model gets labels 0, 1, 2, ... in turn, or ``class_label``.
    ``clip_denoised`` clips each predicted x̂_0 to [−1, 1], as DDPM's reference code does.
    The network runs under the autocast that ``config.mixed_precision`` picks for its device
    (bf16 or fp16 on a GPU, none on a CPU), as in training."""
    device = next(model.parameters()).device
    y = None
    if config.num_classes:
        if class_label is not None:
            if not 0 <= class_label < config.num_classes:
                raise ValueError(f"class_label must be in 0..{config.num_classes - 1}, "
                                 f"got {class_label}.")
            y = torch.full((n,), class_label, dtype=torch.long, device=device)
        else:
            y = torch.arange(n, device=device) % config.num_classes
    elif class_label is not None or guidance_scale != 1:
        flag = "--class-label" if class_label is not None else "--guidance-scale"
        raise ValueError(f"this model is unconditional: drop {flag}, or train with "
                         "--class-conditional.")
    was_training = model.training
    model.eval()
    shape = (n, config.channels, config.resolution, config.resolution)
    gen = torch.Generator().manual_seed(seed)
    if sampler == "ddpm" and steps is None:
        steps = diffusion.num_timesteps
    with autocast(device, autocast_dtype(device, config.mixed_precision)):
        x = sample(diffusion, model, shape, sampler=sampler, steps=steps, eta=eta, y=y,
                   guidance_scale=guidance_scale, generator=gen, device=device,
                   clip_denoised=clip_denoised, progress=progress)
    model.train(was_training)
    return x.clamp(-1, 1).float().cpu()


def save_samples(x: torch.Tensor, path, nrow: Optional[int] = None) -> Path:
    """Save images in [−1, 1] as one PNG grid (``nrow`` per row, default √n)."""
    return save_grid(x, path, nrow=nrow or max(1, int(math.sqrt(len(x)))))


def save_loss_plot(losses: list, path) -> None:
    """Save the loss curve (one value per step) as a PNG and close the figure."""
    if losses:
        plt.close(plot_loss(losses, path=path))


def load_run(run_dir, device: str = "auto"):
    """``(config, ema_model, diffusion)`` from a run folder's checkpoint, ready to sample.
    A checkpoint whose EMA weights hold NaN or inf (a diverged run) is refused."""
    ckpt = load_checkpoint(run_dir)                  # refuses NaN/inf weights (check_finite)
    config = ckpt.config
    device = get_device(device)
    model = config.build_model()
    load_weights(model, ckpt.ema_state, str(ckpt.path))
    return config, model.to(device).eval(), config.build_diffusion().to(device)
