"""The toy GAN: loss formulas against their definitions, and a short training run."""
import math

import torch

from diffusion_tutorial.gan import (Discriminator, Generator, discriminator_loss, generator_loss,
                                    train_gan)
from diffusion_tutorial.toy import GaussianMixture


def test_losses_match_binary_cross_entropy():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(50, generator=g), torch.randn(50, generator=g)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    want_d = bce(real, torch.ones(50)) + bce(fake, torch.zeros(50))
    assert torch.allclose(discriminator_loss(real, fake), want_d, atol=1e-6)
    assert torch.allclose(generator_loss(fake), bce(fake, torch.ones(50)), atol=1e-6)
    # an undecided discriminator (logit 0) costs log 2 per term
    zero = torch.zeros(8)
    assert math.isclose(discriminator_loss(zero, zero).item(), 2 * math.log(2), rel_tol=1e-6)


def test_generator_loss_does_not_saturate():
    """When D confidently rejects fakes (logit −10) the non-saturating loss still has a
    gradient of about −1 per logit, while the original minimax term log(1 − σ(a)) has ~0."""
    a = torch.full((4,), -10.0, requires_grad=True)
    (grad_ns,) = torch.autograd.grad(generator_loss(a), a)
    b = torch.full((4,), -10.0, requires_grad=True)
    (grad_mm,) = torch.autograd.grad(torch.log1p(-torch.sigmoid(b)).mean(), b)
    assert torch.allclose(grad_ns, torch.full((4,), -0.25), atol=1e-3)  # −(1 − σ(a)) / B
    assert grad_mm.abs().max() < 1e-4


def test_networks_shapes():
    G, D = Generator(noise_dim=3, dim=2, hidden=16, layers=2), Discriminator(2, 16, 2)
    x = G.sample(7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 2) and D(x).shape == (7,)


def test_train_gan_runs_with_finite_losses_and_snapshots():
    mix = GaussianMixture.ring()
    data = mix.sample(2000, torch.Generator().manual_seed(0))
    res = train_gan(data, steps=60, batch_size=64, hidden=32, layers=2, snapshot_every=20,
                    n_snapshot=100, progress=False, seed=1)
    assert len(res.d_losses) == len(res.g_losses) == 60
    assert all(math.isfinite(v) for v in res.d_losses + res.g_losses)
    assert [s for s, _ in res.snapshots] == [20, 40, 60]
    assert res.snapshots[-1][1].shape == (100, 2)
    # the discriminator learns something: its loss drops below the chance level 2 log 2
    assert min(res.d_losses) < 2 * math.log(2)
    # same seed, same run
    again = train_gan(data, steps=60, batch_size=64, hidden=32, layers=2, snapshot_every=20,
                      n_snapshot=100, progress=False, seed=1)
    assert again.d_losses == res.d_losses
