"""A small generative adversarial network (GAN) for 2-D points, to compare with diffusion.

Goodfellow et al. (2014) train a generator G(z) against a discriminator D(x) that
outputs a logit (the log-odds that x is real). With σ the logistic function, the
discriminator minimises the binary cross-entropy

    L_D = −E_x[log σ(D(x))] − E_z[log(1 − σ(D(G(z))))],

and the generator uses the "non-saturating" loss of the same paper (section 3),
L_G = −E_z[log σ(D(G(z)))], whose gradient stays large while D easily rejects fakes.
Both are written with softplus: −log σ(a) = softplus(−a), −log(1 − σ(a)) = softplus(a).

On a ring of Gaussians a GAN often covers only some of the modes ("mode collapse"),
while a diffusion model trained on the same points with a plain regression loss
covers them all. Chapter: Diffusion vs GANs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .utils import get_device


def _mlp(d_in: int, hidden: int, layers: int, d_out: int, act) -> nn.Sequential:
    dims = [d_in] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        mods += [nn.Linear(a, b), act()]
    mods.append(nn.Linear(dims[-1], d_out))
    return nn.Sequential(*mods)


class Generator(nn.Module):
    """G: noise z (B, noise_dim) ~ N(0, I) -> a point (B, dim)."""

    def __init__(self, noise_dim: int = 2, dim: int = 2, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.net = _mlp(noise_dim, hidden, layers, dim, nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n points G(z), z ~ N(0, I); shape (n, dim)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.noise_dim, generator=generator,
                        device=generator.device if generator is not None else device)
        return self(z.to(device))


class Discriminator(nn.Module):
    """D: a point (B, dim) -> one logit per point, shape (B,)."""

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        self.net = _mlp(dim, hidden, layers, 1, lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = E[softplus(−D(x))] + E[softplus(D(G(z)))]  (binary cross-entropy)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating L_G = E[softplus(−D(G(z)))] = −E[log σ(D(G(z)))]."""
    return F.softplus(-fake_logits).mean()


@dataclass
class GANResult:
    """What :func:`train_gan` returns: the two networks, per-step losses, and
    ``snapshots``, a list of ``(step, samples)`` pairs taken during training."""
    generator: Generator
    discriminator: Discriminator
    d_losses: list = field(default_factory=list)
    g_losses: list = field(default_factory=list)
    snapshots: list = field(default_factory=list)


def train_gan(data: torch.Tensor, steps: int = 2000, batch_size: int = 256, lr: float = 1e-3,
              hidden: int = 128, layers: int = 3, noise_dim: int = 2, betas=(0.5, 0.999),
              seed: int = 0, snapshot_every: int = 0, n_snapshot: int = 1000,
              device="cpu", progress: bool = True) -> GANResult:
    """Train a GAN on the points ``data`` (N, dim) with alternating Adam updates:
    one discriminator step, then one generator step, per iteration.

    Each step draws a fresh minibatch of real points and of noise. Every
    ``snapshot_every`` steps (0: only at the end) ``n_snapshot`` generated points are
    stored. Returns a :class:`GANResult`."""
    if data.ndim != 2:
        raise ValueError(f"data must be points of shape (N, dim), got {tuple(data.shape)}.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    device = get_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = data.to(device)
    G = Generator(noise_dim, data.shape[1], hidden, layers).to(device)
    D = Discriminator(data.shape[1], hidden, layers).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    result = GANResult(G, D)
    for step in tqdm(range(1, steps + 1), desc="GAN training", disable=not progress, leave=False):
        real = data[torch.randint(0, len(data), (batch_size,), generator=gen).to(device)]
        z = torch.randn(batch_size, noise_dim, generator=gen).to(device)
        # 1. discriminator step, with the generator's output detached
        fake = G(z)
        loss_d = discriminator_loss(D(real), D(fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # 2. generator step through the updated discriminator
        loss_g = generator_loss(D(fake))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        result.d_losses.append(loss_d.item())
        result.g_losses.append(loss_g.item())
        if (snapshot_every and step % snapshot_every == 0) or step == steps:
            if not result.snapshots or result.snapshots[-1][0] != step:
                result.snapshots.append((step, G.sample(n_snapshot, gen).cpu()))
    return result
