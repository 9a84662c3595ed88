"""A small CNN that recognises MNIST digits: the yardstick for the sample-quality metrics.

The Inception network behind the usual FID (Heusel et al. 2017) was trained on ImageNet
photographs and knows nothing of 28x28 digits. For digits a small classifier trained on
real digits does the same job: its penultimate layer is a feature space in which real and
generated digits can be compared (:mod:`diffusion_tutorial.metrics`), and its softmax
says how confidently each sample reads as a digit.

This module holds the network, its loading and measurements that need no data. The
package ships trained weights (``pretrained/mnist_classifier.safetensors``, checked
against a SHA-256 checksum on load), so no training is needed at use time. They were made
by :mod:`diffusion_tutorial.classifier_train` on the train split of the bundled
``mnist-sample`` digits, with the commands recorded in ``pretrained/mnist_classifier.json``
(``commands``; ``python -m diffusion_tutorial.classifier`` is the older name of the
command and still runs it)::

    python -m diffusion_tutorial.classifier_train --out diffusion_tutorial/pretrained

Inputs are images in the model range [−1, 1], shape (B, 1, 28, 28), exactly what the
diffusion samplers return. Chapter: Sampling.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from .pretrained import PRETRAINED_DIR, verify_checksum
from .utils import get_device

CLASSIFIER_NAME = "mnist_classifier"
FEATURE_DIM = 128


class MNISTClassifier(nn.Module):
    """Two convolution + max-pool blocks and two linear layers (~0.42M parameters).

    ``features(x)`` returns the 128-d penultimate activations (after ReLU) used for the
    classifier-FID; ``forward(x)`` returns the 10 class logits."""

    def __init__(self, feature_dim: int = FEATURE_DIM, dropout: float = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),                                   # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),                                   # (B, 64, 7, 7)
            nn.Flatten(),                                      # (B, 3136)
            nn.Linear(64 * 7 * 7, feature_dim), nn.ReLU(),     # (B, 128) features
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, 10)

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"the classifier takes digits shaped (B, 1, 28, 28) in [-1, 1], "
                             f"got {tuple(x.shape)}.")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, (B, 1, 28, 28) -> (B, 128)."""
        self._check(x)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, (B, 1, 28, 28) -> (B, 10)."""
        return self.head(self.dropout(self.features(x)))

    def features_and_logits(self, x: torch.Tensor):
        """Both at once: ((B, 128), (B, 10)) from one pass (call in eval mode)."""
        h = self.features(x)
        return h, self.head(h)


@torch.no_grad()
def confident_share_on_noise(classifier: nn.Module, n: int = 500, seed: int = 0) -> float:
    """Share of uniform-noise images that the classifier calls with p ≥ 0.9 (should be ~0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
    return confident_share_on(classifier, x)


@torch.no_grad()
def confident_share_on(classifier: nn.Module, images: torch.Tensor, threshold: float = 0.9,
                       batch_size: int = 1000) -> float:
    """Share of ``images`` the classifier calls with p ≥ ``threshold`` (real digits: near 1)."""
    device = next(classifier.parameters()).device
    classifier.eval()
    hits = sum((classifier(images[i:i + batch_size].to(device)).softmax(-1).max(-1).values
                >= threshold).sum().item() for i in range(0, len(images), batch_size))
    return hits / len(images)


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 500) -> float:
    """Fraction of ``images`` (N, 1, 28, 28) in [−1, 1] whose predicted class is the label."""
    classifier.eval()
    device = next(classifier.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = classifier(images[i:i + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == labels[i:i + batch_size]).sum().item()
    return correct / len(images)


_CACHE: dict = {}


def load_classifier(device="auto", directory=None) -> MNISTClassifier:
    """The shipped classifier in eval mode (float32), its checksum verified first.

    Cached per (device, directory), so metrics can call it freely."""
    device = get_device(device)
    directory = Path(directory) if directory is not None else PRETRAINED_DIR
    key = (str(device), str(directory.resolve()))
    if key not in _CACHE:
        meta_path = directory / f"{CLASSIFIER_NAME}.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no classifier at {meta_path}: reinstall the package or "
                                    "train one with `python -m diffusion_tutorial.classifier_train`.")
        meta = json.loads(meta_path.read_text())
        path = directory / meta["weights"]
        verify_checksum(path, meta["sha256"])
        model = MNISTClassifier()
        model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
        _CACHE[key] = model.to(device).eval()
    return _CACHE[key]


if __name__ == "__main__":
    # `python -m diffusion_tutorial.classifier`, the command recorded with the shipped weights,
    # runs the training command. Imported here: classifier_train imports this module.
    from .classifier_train import main
    main()
