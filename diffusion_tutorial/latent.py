"""Latent diffusion (Rombach et al. 2022): the same diffusion, run on autoencoder latents.

A trained autoencoder maps an image x to a smaller latent z = E(x) (here 1x28x28 ->
4x7x7, see :mod:`diffusion_tutorial.vae`). Nothing in the diffusion changes: the same
:class:`~diffusion_tutorial.diffusion.GaussianDiffusion`, the same loss
:meth:`~diffusion_tutorial.diffusion.GaussianDiffusion.p_losses` and the same samplers
run on z, and samples are decoded with x = D(z). Two details from the paper:

* Latents are scaled to unit variance before diffusion: z = f · E(x) with the stored
  scale factor f = 1 / std(E(x)) over the training set (Rombach et al. 2022, section 4.3.2
  and appendix G), so the forward process, built for data of variance about 1, keeps
  its signal-to-noise schedule. Decoding divides by f again.
* The autoencoder is frozen while the ε-model trains.

The gain is speed: the network sees 16 times fewer positions. :func:`measure_speedup`
times a training step and sampling in both spaces. Chapter: Latent diffusion.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .data import dataset_tensors
from .diffusion import GaussianDiffusion
from .samplers import ddim_sample, ddpm_sample
from .train_memory import train_eps_model  # noqa: F401 - its old home; import it from train_memory
from .utils import get_device, median_time
from .vae import VAE


# ---------------------------------------------------------------------- encoding
@torch.no_grad()
def encode_dataset(vae: VAE, dataset, batch_size: int = 256, device="auto") -> torch.Tensor:
    """The posterior means E(x) of every image of ``dataset`` (a tensor (N, C, H, W) or a
    Dataset of (x, label) pairs), unscaled: a CPU tensor (N, lc, H/4, W/4)."""
    device = get_device(device)
    images, _ = dataset_tensors(dataset)
    vae = vae.to(device).eval()
    out = [vae.encode(images[i:i + batch_size].to(device))[0].cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def latent_scale_factor(latents: torch.Tensor) -> float:
    """f = 1 / std(z) over all latent entries, so that f · z has unit variance
    (Rombach et al. 2022, appendix G)."""
    std = latents.float().std().item()
    if not std > 0:
        raise ValueError("the latents have zero variance: train the autoencoder first.")
    return 1.0 / std


class LatentDiffusion(nn.Module):
    """A frozen VAE, an ε-model on its scaled latents, and the diffusion process.

    Args:
        vae: a trained :class:`~diffusion_tutorial.vae.VAE` (its weights are frozen here).
        eps_model: any ε-predictor ``model(z_t, t)`` for latents of shape (lc, h, w), e.g.
            ``UNet(in_channels=4, image_size=7, channel_mults=(1,), ...)``.
        diffusion: the :class:`GaussianDiffusion` (the same class as in pixel space).
        scale_factor: f from :func:`latent_scale_factor`; z = f · E(x).
        image_size: side of the (square) images, 28 for MNIST.
    """

    def __init__(self, vae: VAE, eps_model: nn.Module, diffusion: GaussianDiffusion,
                 scale_factor: float = 1.0, image_size: int = 28) -> None:
        super().__init__()
        self.latent_shape = vae.latent_shape(image_size)  # (lc, h, w)
        self.vae = vae.eval().requires_grad_(False)
        self.eps_model = eps_model
        self.diffusion = diffusion
        self.register_buffer("scale_factor", torch.tensor(float(scale_factor)))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = f · E(x): images (B, C, H, W) -> scaled latents (B, lc, H/4, W/4)."""
        return self.scale_factor * self.vae.encode(x)[0]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x = D(z / f): scaled latents -> images in [−1, 1]."""
        return self.vae.decode(z / self.scale_factor)

    def p_losses(self, z0: torch.Tensor, **kwargs) -> torch.Tensor:
        """L_simple on scaled latents z0 (DDPM eq. 14, unchanged)."""
        return self.diffusion.p_losses(self.eps_model, z0, **kwargs)

    @torch.no_grad()
    def sample(self, n: int, sampler: str = "ddim", steps: int = 50,
               generator: Optional[torch.Generator] = None, progress: bool = False,
               return_latents: bool = False, **kwargs):
        """Sample n latents z_0 with DDIM (``steps``) or DDPM, then decode them:
        images (n, C, H, W) in [−1, 1] (and the latents if ``return_latents``)."""
        device = self.scale_factor.device
        shape = (n, *self.latent_shape)  # (n, lc, h, w)
        if sampler == "ddim":
            z = ddim_sample(self.diffusion, self.eps_model, shape, steps=steps,
                            generator=generator, device=device, progress=progress, **kwargs)
        elif sampler == "ddpm":
            z = ddpm_sample(self.diffusion, self.eps_model, shape, generator=generator,
                            device=device, progress=progress, **kwargs)
        else:
            raise ValueError(f"unknown sampler {sampler!r}: choose 'ddim' or 'ddpm'.")
        x = self.decode(z)
        return (x, z) if return_latents else x


# ---------------------------------------------------------------------- speed
def measure_speedup(pixel_model: nn.Module, latent: LatentDiffusion, diffusion: GaussianDiffusion,
                    image_shape=(1, 28, 28), batch_size: int = 32, repeats: int = 3,
                    n_samples: int = 16, sample_steps: int = 10, device="auto",
                    include_encoder: bool = True) -> dict:
    """Time one training step (forward, backward, Adam) and DDIM sampling in pixel space
    and in latent space, on the same device and batch size.

    The latent training step includes encoding the batch with the frozen encoder when
    ``include_encoder`` (as when latents are not cached); latent sampling includes
    decoding. Returns images/s for each, the speed-ups (latent / pixel) and the
    parameter counts of the two ε-models."""
    device = get_device(device)
    pixel_model.to(device)
    latent.to(device)
    diffusion.to(device)
    x = torch.randn(batch_size, *image_shape, device=device).clamp(-1, 1)  # (B, C, H, W)
    z = latent.encode(x)  # (B, lc, h, w)

    def train_step(model, params, inputs_fn):
        opt = torch.optim.Adam(params, lr=1e-4)

        def step():
            loss = diffusion.p_losses(model, inputs_fn())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def sample_fn(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    pixel_model.train()
    latent.eps_model.train()
    t_pixel = median_time(train_step(pixel_model, pixel_model.parameters(), lambda: x), repeats,
                          device=device)
    t_latent = median_time(train_step(latent.eps_model, latent.eps_model.parameters(),
                                      (lambda: latent.encode(x)) if include_encoder else (lambda: z)),
                           repeats, device=device)
    pixel_model.eval()
    latent.eps_model.eval()
    s_pixel = median_time(sample_fn(lambda: ddim_sample(
        diffusion, pixel_model, (n_samples, *image_shape), steps=sample_steps, device=device,
        progress=False)), max(1, repeats - 1), device=device)
    s_latent = median_time(sample_fn(lambda: latent.sample(n_samples, steps=sample_steps)),
                           max(1, repeats - 1), device=device)

    def count(m):
        return sum(p.numel() for p in m.parameters())
    out = {
        "train_images_per_s_pixel": batch_size / t_pixel,
        "train_images_per_s_latent": batch_size / t_latent,
        "sample_images_per_s_pixel": n_samples / s_pixel,
        "sample_images_per_s_latent": n_samples / s_latent,
        "params_pixel": count(pixel_model),
        "params_latent": count(latent.eps_model),
        "device": str(device),
    }
    out["train_speedup"] = out["train_images_per_s_latent"] / out["train_images_per_s_pixel"]
    out["sample_speedup"] = out["sample_images_per_s_latent"] / out["sample_images_per_s_pixel"]
    return out
