"""The trainer's named parts: label dropout shared by both trainers, the run utilities'
homes, and the in-memory trainer."""
import importlib
import math

import torch

import diffusion_tutorial as dt
from conftest import TinyEps
from diffusion_tutorial import runs
from diffusion_tutorial.batches import batch_indices, epoch_permutation
from diffusion_tutorial.diffusion import GaussianDiffusion
from diffusion_tutorial.train import drop_labels
from diffusion_tutorial.train_memory import train_eps_model


def test_drop_labels_rate_and_untouched_labels():
    """Each label becomes the null class with probability p: over n = 20,000 draws the
    null share lies within 5 standard errors of p; the others keep their value."""
    n, p, null = 20_000, 0.2, 10
    labels = torch.arange(n) % 10
    out = drop_labels(labels, null, p, generator=torch.Generator().manual_seed(0))
    share = (out == null).float().mean().item()
    assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / n), share
    kept = out != null
    assert torch.equal(out[kept], labels[kept])
    assert torch.equal(drop_labels(labels, null, 0.0), labels)
    assert (drop_labels(labels, null, 1.0) == null).all()
    same = drop_labels(labels, null, p, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, same)                       # one generator: reproducible


def test_in_memory_trainer_drops_labels_with_the_shared_helper():
    """train_eps_model's labels are those of drop_labels drawn from its own generator."""
    seen = []

    class Recorder(TinyEps):
        def forward(self, x, t, y=None):
            seen.append(y.clone())
            return super().forward(x, t)

    data = torch.randn(32, 1, 4, 4)
    labels = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(1))
    losses = train_eps_model(Recorder(timesteps=50), GaussianDiffusion(timesteps=50), data, steps=200,
                             batch_size=8, labels=labels, num_classes=2, p_uncond=0.5,
                             device="cpu", progress=False)
    assert len(losses) == 200 and all(math.isfinite(v) for v in losses)
    seen = torch.cat(seen)
    share = (seen == 2).float().mean().item()           # 1,600 labels: SE = 0.0125
    assert abs(share - 0.5) < 5 * 0.0125, share
    assert set(seen.tolist()) <= {0, 1, 2}


def test_run_utilities_live_in_runs_and_stay_importable_from_train():
    train_module = importlib.import_module("diffusion_tutorial.train")  # dt.train is the function
    for name in ("load_run", "sample_images", "save_samples", "save_loss_plot"):
        assert getattr(train_module, name) is getattr(runs, name), name
    assert dt.load_run is runs.load_run and dt.sample_images is runs.sample_images
    assert dt.train_eps_model is train_eps_model
    assert importlib.import_module("diffusion_tutorial.latent").train_eps_model is train_eps_model


def test_epoch_permutation_is_cached_without_a_mutable_default():
    assert torch.equal(epoch_permutation(10, 3, 1), epoch_permutation(10, 3, 1))
    assert epoch_permutation.cache_info().maxsize == 2
    order = [i for k in range(5) for i in batch_indices(10, 2, 5 + k, seed=3)]  # epoch 1
    assert order == epoch_permutation(10, 3, 1).tolist()
