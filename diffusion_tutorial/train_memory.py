"""A small in-memory trainer: DDPM Algorithm 1 on a tensor that fits on the device.

:func:`train_eps_model` trains any ε-model on an in-memory tensor (autoencoder latents,
2-D points) with Adam on L_simple, nothing else: no EMA, no checkpoints, no log files.
The chapters on latent diffusion, the score view, GANs and guidance use it; full image
runs go through :func:`diffusion_tutorial.train.train`. Both drop labels for
classifier-free guidance with the same :func:`~diffusion_tutorial.train.drop_labels`.
Chapter: Training.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from .diffusion import GaussianDiffusion
from .train import drop_labels
from .utils import get_device


def train_eps_model(model: nn.Module, diffusion: GaussianDiffusion, data: torch.Tensor,
                    steps: int = 1000, batch_size: int = 128, lr: float = 1e-3,
                    labels: Optional[torch.Tensor] = None, num_classes: Optional[int] = None,
                    p_uncond: float = 0.1, device="auto", seed: int = 0,
                    progress: bool = True) -> list:
    """Train an ε-model on an in-memory tensor ``data`` (N, ...) — latents or 2-D points —
    with Adam on L_simple (:meth:`GaussianDiffusion.p_losses`). Returns the per-step losses.

    With ``labels`` (N,) the model is trained class-conditionally for classifier-free
    guidance (Ho & Salimans 2022): each label is replaced by the null class
    ``num_classes`` with probability ``p_uncond``, so one network learns both ε(x_t, t, y)
    and ε(x_t, t). Every random draw comes from one generator seeded with ``seed``."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}.")
    if labels is not None and num_classes is None:
        raise ValueError("pass num_classes with labels (the null class is index num_classes).")
    device = get_device(device)
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    diffusion.to(device)
    data = data.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in tqdm(range(steps), desc="training ε-model", disable=not progress, leave=False):
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        x0 = data[idx.to(device)]                                     # (B, ...)
        y = None
        if labels is not None:
            y = drop_labels(labels[idx], num_classes, p_uncond, generator=gen).to(device)
        t = torch.randint(0, diffusion.num_timesteps, (batch_size,), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        loss = diffusion.p_losses(model, x0, t=t, noise=noise, y=y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    model.eval()
    return torch.stack(losses).tolist()                               # one transfer, at the end
