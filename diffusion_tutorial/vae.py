"""A small convolutional variational autoencoder (VAE) for 1x28x28 images.

Latent diffusion (Rombach et al. 2022) first learns an autoencoder, then runs the
diffusion process on its latents z = E(x) instead of on pixels. This module is that
autoencoder, kept small enough to train in a minute on a CPU. The encoder halves the
image twice, so a 1x28x28 digit becomes a 4x7x7 latent (196 numbers instead of 784):

    x (B, 1, 28, 28) -> encoder -> mean, log-variance (B, 4, 7, 7) each
    z = mean + exp(logvar / 2) · ε,  ε ~ N(0, I)            (reparameterisation)
    z (B, 4, 7, 7)   -> decoder -> x̂ (B, 1, 28, 28) in [−1, 1]

The training objective is the negative ELBO of Kingma & Welling (2014), eq. 10 and
appendix B, with a weight β on the KL term (Higgins et al. 2017):

    L(x) = ‖x − x̂‖² + β · KL(q(z | x) ‖ N(0, I)),
    KL = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²).

The squared error is the negative log-likelihood of a Gaussian decoder with fixed
variance ½, up to a constant. A small β keeps the reconstructions sharp and still pulls
the latents towards N(0, I) so that they are well scaled for diffusion (Rombach et al.
use a small KL weight for the same reason). Chapter: Latent diffusion.
"""
from __future__ import annotations

from itertools import cycle
from typing import Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import dataset_tensors
from .utils import get_device


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, I)) per example, summed over latent dimensions:
    ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²)   (Kingma & Welling 2014, appendix B).
    mean, logvar: (B, ...) -> (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """z = μ + σ · ε with ε ~ N(0, I): a sample of q(z | x) that gradients pass through."""
    if generator is None:
        noise = torch.randn_like(mean)
    else:
        noise = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean)
    return mean + (0.5 * logvar).exp() * noise


class VAE(nn.Module):
    """A convolutional VAE: 1x28x28 in [−1, 1] <-> a (latent_channels)x7x7 latent.

    Args:
        in_channels: image channels (1 for MNIST).
        latent_channels: channels of the 7x7 latent (4, as in Stable Diffusion's autoencoder).
        base_channels: width of the first convolution; the second level has twice as many.
    """

    def __init__(self, in_channels: int = 1, latent_channels: int = 4, base_channels: int = 32) -> None:
        super().__init__()
        c = base_channels
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.SiLU(),            # (B, c, 28, 28)
            nn.Conv2d(c, c, 4, stride=2, padding=1), nn.SiLU(),            # (B, c, 14, 14)
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),        # (B, 2c, 7, 7)
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * latent_channels, 1),                      # (B, 2·lc, 7, 7)
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, 2 * c, 3, padding=1), nn.SiLU(),    # (B, 2c, 7, 7)
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.SiLU(),  # (B, c, 14, 14)
            nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.SiLU(),      # (B, c, 28, 28)
            nn.Conv2d(c, in_channels, 3, padding=1), nn.Tanh(),               # (B, 1, 28, 28)
        )

    def latent_shape(self, image_size: int = 28) -> tuple[int, int, int]:
        """Shape of one latent for a square image of side ``image_size``: (lc, H/4, W/4)."""
        return (self.latent_channels, image_size // 4, image_size // 4)

    def encode(self, x: torch.Tensor, sample: bool = False,
               generator: Optional[torch.Generator] = None):
        """q(z | x): returns ``(mean, logvar)``, each (B, lc, H/4, W/4); with
        ``sample=True`` returns ``(z, mean, logvar)`` with z drawn by reparameterisation."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"expected images (B, {self.in_channels}, H, W) with H, W divisible "
                             f"by 4, got {tuple(x.shape)}.")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        logvar = logvar.clamp(-20.0, 10.0)  # keeps exp(logvar) finite early in training
        if sample:
            return reparameterize(mean, logvar, generator), mean, logvar
        return mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x̂ = D(z): (B, lc, h, w) -> (B, C, 4h, 4w), values in [−1, 1]."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents (B, {self.latent_channels}, h, w), got {tuple(z.shape)}.")
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        """Encode, sample z, decode: returns ``(x_hat, mean, logvar)``."""
        z, mean, logvar = self.encode(x, sample=True, generator=generator)
        return self.decode(z), mean, logvar


def vae_loss(x: torch.Tensor, x_hat: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
             beta: float = 1e-3) -> dict:
    """Negative ELBO with a weight β on the KL term, averaged over the batch:
    L = E_x[‖x − x̂‖² + β · KL(q(z | x) ‖ N(0, I))]   (Kingma & Welling 2014, eq. 10).
    Returns a dict of scalars: ``loss``, ``recon`` (summed squared error per image) and
    ``kl`` (nats per image)."""
    recon = (x - x_hat).pow(2).flatten(1).sum(1)  # (B,)
    kl = kl_divergence(mean, logvar)  # (B,)
    return {"loss": (recon + beta * kl).mean(), "recon": recon.mean(), "kl": kl.mean()}


def train_vae(model: VAE, dataset, steps: int = 500, batch_size: int = 64, lr: float = 1e-3,
              device="auto", progress: bool = True, beta: float = 1e-3, seed: int = 0) -> dict:
    """Train ``model`` with Adam on the negative ELBO (:func:`vae_loss`).

    ``dataset``: a tensor (N, C, H, W) in [−1, 1], or a Dataset of (x, label) pairs.
    Returns a dict of per-step lists ``loss``, ``recon``, ``kl``; the model is trained in
    place and left in eval mode on ``device``."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}.")
    device = get_device(device)
    images = dataset_tensors(dataset)[0].to(device)  # (N, C, H, W)
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = {"loss": [], "recon": [], "kl": []}
    batches = cycle(range(0, len(images), batch_size))
    perm = torch.randperm(len(images), generator=generator)
    for step in tqdm(range(steps), desc="VAE training", disable=not progress, leave=False):
        start = next(batches)
        if start == 0 and step > 0:
            perm = torch.randperm(len(images), generator=generator)  # new epoch
        x = images[perm[start:start + batch_size].to(device)]
        x_hat, mean, logvar = model(x)
        out = vae_loss(x, x_hat, mean, logvar, beta)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        for key in history:
            history[key].append(out[key].item())
    model.eval()
    return history
