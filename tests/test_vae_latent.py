"""The VAE (ELBO terms) and latent diffusion (encode/decode, scale factor, training, speed)."""
import math

import pytest
import torch

from diffusion_tutorial import GaussianDiffusion
from diffusion_tutorial.latent import (LatentDiffusion, encode_dataset, latent_scale_factor,
                                       measure_speedup)
from diffusion_tutorial.train_memory import train_eps_model
from diffusion_tutorial.unet import UNet
from diffusion_tutorial.vae import VAE, kl_divergence, reparameterize, train_vae, vae_loss


@pytest.fixture(scope="module")
def digits():
    from diffusion_tutorial.data import get_dataset
    ds = get_dataset("mnist-sample")
    return torch.stack([ds[i][0] for i in range(256)])  # (256, 1, 28, 28) in [−1, 1]


def test_kl_closed_form_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 2, 2, 2, generator=g)
    logvar = 0.5 * torch.randn(3, 2, 2, 2, generator=g)
    closed = kl_divergence(mean, logvar).double()  # (3,)
    n = 100_000
    z = reparameterize(mean.expand(n, *mean.shape), logvar.expand(n, *logvar.shape), g).double()
    q = torch.distributions.Normal(mean.double(), (0.5 * logvar.double()).exp())
    p = torch.distributions.Normal(0.0, 1.0)
    log_ratio = (q.log_prob(z) - p.log_prob(z)).flatten(2).sum(-1)  # (n, 3)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    assert torch.all((mc - closed).abs() < 4 * se + 1e-3), (mc, closed, se)
    # KL is zero exactly at the prior
    assert kl_divergence(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max() == 0


def test_vae_loss_combines_terms_and_shapes():
    vae = VAE(base_channels=8)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    x_hat, mean, logvar = vae(x, torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape and mean.shape == logvar.shape == (4, 4, 7, 7)
    assert x_hat.abs().max() <= 1
    out = vae_loss(x, x_hat, mean, logvar, beta=0.5)
    recon = ((x - x_hat) ** 2).sum((1, 2, 3)).mean()
    assert torch.allclose(out["recon"], recon)
    assert torch.allclose(out["loss"], recon + 0.5 * kl_divergence(mean, logvar).mean())
    with pytest.raises(ValueError, match="divisible by 4"):
        vae.encode(torch.zeros(1, 1, 30, 30))


def test_vae_reconstruction_loss_falls(digits):
    torch.manual_seed(0)
    vae = VAE(base_channels=8)
    hist = train_vae(vae, digits, steps=50, batch_size=32, lr=3e-3, device="cpu", progress=False)
    first, last = sum(hist["recon"][:5]) / 5, sum(hist["recon"][-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert all(math.isfinite(v) for v in hist["kl"])


def test_latent_scale_factor_gives_unit_variance_and_roundtrip(digits):
    torch.manual_seed(0)
    vae = VAE(base_channels=8)
    train_vae(vae, digits[:128], steps=10, batch_size=32, device="cpu", progress=False)
    z = encode_dataset(vae, digits[:128], batch_size=50, device="cpu")  # (128, 4, 7, 7)
    assert z.shape == (128, 4, 7, 7)
    f = latent_scale_factor(z)
    model = UNet(in_channels=4, base_channels=16, channel_mults=(1,), attention_resolutions=(),
                 image_size=7)
    ld = LatentDiffusion(vae, model, GaussianDiffusion(timesteps=50), scale_factor=f)
    held_out = ld.encode(digits[128:])  # images the factor was not computed on
    assert abs(held_out.std().item() - 1) < 0.15, held_out.std()
    # the scale factor cancels between encode and decode
    assert torch.allclose(ld.decode(ld.encode(digits[:4])), vae.decode(vae.encode(digits[:4])[0]), atol=1e-5)
    assert not any(p.requires_grad for p in ld.vae.parameters())  # frozen autoencoder
    imgs, lat = ld.sample(3, steps=5, generator=torch.Generator().manual_seed(0), return_latents=True)
    assert imgs.shape == (3, 1, 28, 28) and lat.shape == (3, 4, 7, 7)


def test_train_eps_model_on_latents_and_conditional_labels():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(64, 4, 7, 7, generator=g) * 0.5 + 1.0
    model = UNet(in_channels=4, base_channels=16, channel_mults=(1,), attention_resolutions=(),
                 image_size=7, num_classes=3)
    d = GaussianDiffusion(timesteps=100)
    labels = torch.randint(0, 3, (64,), generator=g)
    losses = train_eps_model(model, d, data, steps=40, batch_size=16, lr=2e-3, labels=labels,
                             num_classes=3, device="cpu", progress=False)
    assert len(losses) == 40 and sum(losses[-10:]) < sum(losses[:10])
    with pytest.raises(ValueError, match="num_classes"):
        train_eps_model(model, d, data, steps=1, labels=labels, progress=False)


def test_measure_speedup_reports_faster_latent_training():
    torch.manual_seed(0)
    vae = VAE(base_channels=8)
    pixel = UNet(in_channels=1, base_channels=16, channel_mults=(1, 2), attention_resolutions=(),
                 image_size=28)
    lat_model = UNet(in_channels=4, base_channels=32, channel_mults=(1,), attention_resolutions=(),
                     image_size=7)
    d = GaussianDiffusion(timesteps=100)
    out = measure_speedup(pixel, LatentDiffusion(vae, lat_model, d), d, batch_size=16, repeats=2,
                          n_samples=4, sample_steps=3, device="cpu")
    for key in ("train_images_per_s_pixel", "train_images_per_s_latent",
                "sample_images_per_s_pixel", "sample_images_per_s_latent"):
        assert out[key] > 0
    # 16x fewer positions: even on a loaded CPU the latent step is clearly faster
    assert out["train_speedup"] > 1.5, out
