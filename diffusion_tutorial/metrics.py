"""Sample-quality metrics for generated digits, computed offline with the shipped classifier.

* **Classifier-FID** — the Fréchet distance (Heusel et al. 2017, "GANs Trained by a Two
  Time-Scale Update Rule Converge to a Local Nash Equilibrium", eq. 6) between Gaussian
  fits N(μ_r, Σ_r), N(μ_g, Σ_g) of the classifier's 128-d penultimate features of real and
  generated digits:

      d² = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2}).

  Lower is better. It is *not* comparable with the Inception FID of papers (other
  features, other scale), and it is biased upwards for small sample counts, so compare it
  only at equal sample sizes and against the **floor**: the FID between two disjoint
  halves of real digits of the same size (:func:`real_vs_real_fid`).
* **Confident share** — the fraction of samples whose largest softmax probability is at
  least 0.9: how many samples read clearly as one digit.
* **Class entropy** — the entropy (nats) of the histogram of predicted classes; its
  maximum log 10 ≈ 2.303 means all ten digits appear equally often (mode coverage), a
  collapsed model scores near 0.

Everything here runs without downloads. For CIFAR-10 with the standard Inception
features, the optional packages ``torch-fidelity`` or ``clean-fid`` compute the usual FID
(they download the Inception weights on first use); the book does not require them.
Chapter: Sampling.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from .classifier import load_classifier
from .data import dataset_tensors, get_dataset

CONFIDENCE_THRESHOLD = 0.9
NUM_CLASSES = 10


# ---------------------------------------------------------------------- Fréchet distance
def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), in float64, of features shaped (N, D)."""
    f = torch.as_tensor(features).detach().cpu().double().numpy()
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be shaped (N, D) with N >= 2, got {f.shape}.")
    return f.mean(0), np.cov(f, rowvar=False)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """d² = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})  (Heusel et al. 2017, eq. 6).

    Σ1 Σ2 is not symmetric, but it is similar to the symmetric PSD matrix
    M = Σ1^{1/2} Σ2 Σ1^{1/2}, so Tr((Σ1 Σ2)^{1/2}) = Tr(M^{1/2}) = Σ_i √λ_i(M): two
    symmetric eigen-decompositions in float64, no complex round-off, and singular
    covariances (fewer samples than feature dimensions) need no special care."""
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"shapes do not match: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}.")
    root1 = _psd_sqrt(sigma1)
    eig = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean
    return float(max(value, 0.0))


def fid_from_features(features_a, features_b) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (N_a, D), (N_b, D)."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


def fid_standard_error(features, ref_features, n_boot: int = 100, seed: int = 0) -> float:
    """Bootstrap standard error of ``fid_from_features(features, ref_features)`` due to the
    finite generated set: the standard deviation of the FID over ``n_boot`` resamples of the
    rows of ``features`` drawn with replacement, the reference held fixed (Efron &
    Tibshirani 1993, "An Introduction to the Bootstrap", chapter 6)."""
    f = torch.as_tensor(features).detach().cpu().double()
    mu_ref, sigma_ref = gaussian_stats(ref_features)
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}.")
    g = torch.Generator().manual_seed(seed)
    values = [frechet_distance(*gaussian_stats(f[torch.randint(len(f), (len(f),), generator=g)]),
                               mu_ref, sigma_ref) for _ in range(n_boot)]
    return float(np.std(values, ddof=1))


# ---------------------------------------------------------------------- classifier outputs
def confident_share(logits, threshold: float = CONFIDENCE_THRESHOLD) -> float:
    """Fraction of rows of ``logits`` (N, K) whose max softmax probability is ≥ threshold."""
    logits = torch.as_tensor(logits).float()
    return (logits.softmax(-1).max(-1).values >= threshold).float().mean().item()


def confident_share_standard_error(logits, threshold: float = CONFIDENCE_THRESHOLD) -> float:
    """Binomial standard error √(p (1 − p) / N) of the confident share p of N samples."""
    p, n = confident_share(logits, threshold), len(logits)
    return math.sqrt(p * (1 - p) / n)


def paired_confident_difference(logits_a, logits_b,
                                threshold: float = CONFIDENCE_THRESHOLD) -> tuple[float, float]:
    """share(b) − share(a) and its standard error for *paired* samples (row i of both drawn
    from the same x_T and noise): with d_i = c_b,i − c_a,i, where c is 1 for a confident
    sample, the difference is mean(d) and its standard error sd(d)/√N. Pairing removes the
    variation the two samplers share, so the error is smaller than for independent sets."""
    conf = [torch.as_tensor(l).float().softmax(-1).max(-1).values >= threshold
            for l in (logits_a, logits_b)]
    if conf[0].shape != conf[1].shape or len(conf[0]) < 2:
        raise ValueError("need two equally long sets of at least 2 paired samples.")
    d = conf[1].double() - conf[0].double()
    return d.mean().item(), (d.std() / math.sqrt(len(d))).item()


def class_histogram(logits, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Count of samples per predicted (argmax) class, shape (K,)."""
    pred = torch.as_tensor(logits).argmax(-1)
    return torch.bincount(pred, minlength=num_classes).cpu().numpy()


def class_entropy(logits, num_classes: int = NUM_CLASSES) -> float:
    """Entropy H = −Σ_k p_k log p_k (nats) of the predicted-class histogram p.
    log K (log 10 ≈ 2.303 for digits) when all classes are equally frequent, 0 when one
    class takes every sample."""
    counts = class_histogram(logits, num_classes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def classify(images: torch.Tensor, classifier=None, batch_size: int = 500):
    """Features (N, 128) and logits (N, 10) of images (N, 1, 28, 28) in [−1, 1]
    (clamped there first), computed in batches with the shipped classifier."""
    classifier = classifier if classifier is not None else load_classifier("cpu")
    classifier.eval()
    device = next(classifier.parameters()).device
    images = torch.as_tensor(images).float()
    if not torch.isfinite(images).all():
        raise ValueError("the images contain NaN or inf: the sampler diverged.")
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        f, l = classifier.features_and_logits(images[i:i + batch_size].to(device).clamp(-1, 1))
        feats.append(f.cpu())
        logits.append(l.cpu())
    return torch.cat(feats), torch.cat(logits)


def real_digits(n: Optional[int] = None, train: bool = False, seed: int = 0) -> torch.Tensor:
    """Real digits (N, 1, 28, 28) in [−1, 1] from ``mnist-sample`` (held-out test split by
    default); ``n`` of them drawn without replacement (seeded), or all."""
    images, _ = dataset_tensors(get_dataset("mnist-sample", train=train))
    if n is not None and n < len(images):
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
        images = images[idx]
    return images


def real_vs_real_fid(real: torch.Tensor, n: Optional[int] = None, classifier=None,
                     seed: int = 0) -> float:
    """The FID floor: FID between two disjoint random halves of ``real`` of ``n`` images
    each (default: half of ``real``). A model cannot be expected to score below it at the
    same sample size."""
    half = len(real) // 2
    n = half if n is None else n
    if n > half:
        raise ValueError(f"need 2n = {2 * n} real images for the floor, have {len(real)}.")
    idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    feats, _ = classify(real[idx[:2 * n]], classifier)
    return fid_from_features(feats[:n], feats[n:])


_REAL_CACHE: dict = {}


def _default_real_features(classifier):
    """Features of the mnist-sample train split (reference), and features and logits of
    its test split (held), cached."""
    key = id(classifier) if classifier is not None else None
    if key not in _REAL_CACHE:
        ref, _ = classify(real_digits(train=True), classifier)
        held, held_logits = classify(real_digits(train=False), classifier)
        _REAL_CACHE[key] = (ref, held, held_logits)
    return _REAL_CACHE[key]


def evaluate_samples(samples: torch.Tensor, real: Optional[torch.Tensor] = None,
                     classifier=None, floor: bool = True, seed: int = 0,
                     n_boot: int = 0) -> dict:
    """All metrics for generated digits ``samples`` (N, 1, 28, 28) in [−1, 1].

    The FID needs a *reference* set R of real digits, and its floor a second, disjoint set
    H of real digits. With ``real=None``, R is the ``mnist-sample`` train split (4,500
    digits) and H its held-out test split (500 digits, never seen by the diffusion model);
    with ``real`` given, it is split (seeded) into two halves R and H. Returns a dict with

    * ``fid``: samples vs R;
    * ``fid_floor``: min(N, |H|) real digits drawn (seeded) from H vs the same R — the
      real-vs-real floor
      at (nearly) the same sample size, what a perfect model would get;
    * ``confident_share``, ``class_entropy`` (and ``class_entropy_max`` = log 10),
      ``class_counts``, ``mean_max_prob`` and the counts ``n``, ``n_ref``, ``n_floor``;
    * with ``n_boot`` > 0, the standard errors ``fid_se`` (bootstrap over the samples,
      :func:`fid_standard_error`) and ``confident_share_se`` (binomial);
    * with ``floor``, ``confident_share_real``: the confident share of all of H, the
      ceiling a perfect model would reach (the classifier is not sure of every real digit
      either).
    """
    samples = torch.as_tensor(samples)
    if samples.ndim != 4 or tuple(samples.shape[1:]) != (1, 28, 28):
        raise ValueError(f"samples must be shaped (N, 1, 28, 28) in [-1, 1], got {tuple(samples.shape)}.")
    if len(samples) < 2:
        raise ValueError("need at least 2 samples to fit a Gaussian for the FID.")
    feats, logits = classify(samples, classifier)
    if real is None:
        ref, held, held_logits = _default_real_features(classifier)
    else:
        real = torch.as_tensor(real)
        if len(real) < 4:
            raise ValueError(f"need at least 4 real digits, got {len(real)}.")
        real_feats, real_logits = classify(real, classifier)
        idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
        ref, held = real_feats[idx[:len(real) // 2]], real_feats[idx[len(real) // 2:]]
        held_logits = real_logits[idx[len(real) // 2:]]
    out = {
        "n": len(samples),
        "n_ref": len(ref),
        "fid": fid_from_features(feats, ref),
        "confident_share": confident_share(logits),
        "class_entropy": class_entropy(logits),
        "class_entropy_max": math.log(NUM_CLASSES),
        "class_counts": class_histogram(logits).tolist(),
        "mean_max_prob": logits.softmax(-1).max(-1).values.mean().item(),
    }
    if n_boot:
        out["fid_se"] = fid_standard_error(feats, ref, n_boot, seed)
        out["confident_share_se"] = confident_share_standard_error(logits)
    if floor:
        n_floor = max(2, min(len(samples), len(held)))
        pick = torch.randperm(len(held), generator=torch.Generator().manual_seed(seed))[:n_floor]
        out["fid_floor"] = fid_from_features(held[pick], ref)
        out["n_floor"] = n_floor
        out["confident_share_real"] = confident_share(held_logits)
    return out
