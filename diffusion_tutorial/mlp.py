"""A small noise-prediction network for low-dimensional (e.g. 2-D) toy data.

``MLPDenoiser`` is ε_θ(x_t, t[, y]) for points instead of images: the same job as the
UNet, with fully connected layers. The book uses it on two moons and Gaussian mixtures,
where the exact denoiser E[ε | x_t] is known and the network can be compared with it.
Chapter: The score view.

Architecture (hidden width H)::

    t (B,)  -> sinusoidal embedding (B, H) -> Linear, SiLU, Linear -> emb (B, H)
                                                 [+ class embedding (B, H)]
    x (B, dim) -> Linear -> (B, H), + emb
    `layers` residual blocks:  h = h + Linear(SiLU(Linear(SiLU(h)) + emb_proj(emb)))
    SiLU, Linear (zero-initialised) -> ε̂ (B, dim)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .unet import timestep_embedding
from .utils import as_timestep_tensor


class _Block(nn.Module):
    """One residual block; the embedding enters between its two linear layers."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb_proj = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.fc1(F.silu(h)) + self.emb_proj(emb)  # (B, H)
        return h + self.fc2(F.silu(z))


class MLPDenoiser(nn.Module):
    """ε_θ(x_t, t[, y]) for vectors: (B, dim) -> (B, dim).

    Args:
        dim: data dimension (2 for the toy sets).
        hidden: width H of every hidden layer.
        layers: number of residual blocks.
        timesteps: T of the diffusion the model is trained with. Indices are rescaled to
            t · 1000 / T before the sinusoidal embedding, so short chains (T = 50) use the
            same range of frequencies as the 1000-step DDPM one.
        num_classes: if set, ``y`` in 0..num_classes is embedded and added to the time
            embedding; index ``num_classes`` is the null class, and ``y=None`` means all null.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 3, timesteps: int = 1000,
                 num_classes: Optional[int] = None) -> None:
        super().__init__()
        if hidden % 2 or hidden < 4 or layers < 1 or dim < 1 or timesteps < 1:
            raise ValueError("MLPDenoiser needs dim >= 1, an even hidden >= 4, layers >= 1 "
                             "and timesteps >= 1.")
        self.dim, self.hidden, self.timesteps = dim, hidden, timesteps
        self.num_classes = num_classes
        self.time_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.class_emb = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_Block(hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}.")
        B = x.shape[0]
        t = as_timestep_tensor(t, B, x.device)
        emb = self.time_mlp(timestep_embedding(t.float() * (1000.0 / self.timesteps), self.hidden))
        if self.class_emb is not None:
            if y is None:
                y = torch.full((B,), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.class_emb(y)  # (B, H)
        elif y is not None:
            raise ValueError("this MLPDenoiser is unconditional (num_classes=None): call it "
                             "without y, or build it with num_classes set.")
        h = self.inp(x) + emb  # (B, H)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(h))  # (B, dim)
