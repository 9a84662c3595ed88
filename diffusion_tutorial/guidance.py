"""Classifier-free guidance, measured on digits.

A class-conditional ε-model trained with label dropout gives both ε_θ(x_t, t, y) and
ε_θ(x_t, t, ∅); sampling with ε̃ = ε_∅ + w (ε_y − ε_∅) (Ho & Salimans 2022, "Classifier-Free
Diffusion Guidance", eq. 6 with their w' = w − 1) trades diversity for fidelity to the
label. This module samples every class at several guidance scales w **from the same
noise** (the same x_T and the same sampler noise for every w, so differences between
scales are not sampling luck) and scores the samples with the package's digit classifier:

* **class match**: the share of samples that the classifier reads as the requested class,
  with its binomial standard error √(p(1 − p)/n);
* **classifier-FID** against the ``mnist-sample`` train split (:mod:`.metrics`), with a
  bootstrap standard error; the bootstrap draws the same resampling indices at every
  scale, so :func:`compare` can give the standard error of a *difference* between scales.

Chapter: Classifier-free guidance.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .data import dataset_tensors, get_dataset
from .metrics import (classify, class_entropy, confident_share, fid_from_features, frechet_distance,
                      gaussian_stats, real_digits)
from .samplers import ddim_sample


def class_labels(n_per_class: int, num_classes: int = 10) -> torch.Tensor:
    """Labels (n_per_class · num_classes,): class 0 n_per_class times, then class 1, ...
    (class-major, so ``samples.view(num_classes, n_per_class, ...)`` has one class per row)."""
    if n_per_class < 1 or num_classes < 1:
        raise ValueError(f"need n_per_class >= 1 and num_classes >= 1, got {n_per_class}, {num_classes}.")
    return torch.arange(num_classes).repeat_interleave(n_per_class)


@torch.no_grad()
def guidance_sweep(model, diffusion, scales: Sequence[float], n_per_class: int, *,
                   num_classes: int = 10, shape=(1, 28, 28), steps: int = 50, eta: float = 1.0,
                   seed: int = 0, batch_size: int = 500, clip_denoised: bool = True,
                   progress: bool = False) -> tuple[dict, torch.Tensor]:
    """Sample ``n_per_class`` images of every class at each guidance scale w in ``scales``
    with DDIM (``steps``, ``eta``; x̂_0 clipped to [−1, 1] with ``clip_denoised``). Every
    scale starts from the same x_T and draws the same sampler noise (the generator is
    re-seeded with ``seed`` per scale and per batch).

    Returns ``(samples, labels)``: ``samples[w]`` is (N, *shape) in [−1, 1] on the CPU,
    ``labels`` the (N,) requested classes (:func:`class_labels`)."""
    if getattr(model, "num_classes", None) is None:
        raise ValueError("guidance needs a class-conditional model (UNet(num_classes=...)); "
                         "train one with --class-conditional.")
    labels = class_labels(n_per_class, num_classes)
    device = next(model.parameters()).device
    samples = {}
    for w in scales:
        parts = []
        for start in range(0, len(labels), batch_size):
            y = labels[start:start + batch_size].to(device)
            gen = torch.Generator().manual_seed(seed + start)
            # w = 0 is the unconditional model: one network call per step instead of two
            x = ddim_sample(diffusion, model, (len(y), *shape), steps=steps, eta=eta,
                            y=None if w == 0 else y, guidance_scale=float(w), generator=gen,
                            device=device, clip_denoised=clip_denoised, progress=progress)
            parts.append(x.clamp(-1, 1).float().cpu())
        samples[float(w)] = torch.cat(parts)
    return samples, labels


def _held_out_like(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Held-out real digits (never trained on) with the class counts of ``labels``, capped
    at the 50 per class the held-out split has: the real-vs-real floor of a class-balanced
    sweep at (nearly) its sample size."""
    images, targets = dataset_tensors(get_dataset("mnist-sample", train=False))
    gen = torch.Generator().manual_seed(seed)
    pick = []
    for k, count in enumerate(torch.bincount(labels).tolist()):
        idx = (targets == k).nonzero().flatten()
        pick.append(idx[torch.randperm(len(idx), generator=gen)[:count]])
    return images[torch.cat(pick)]


def _bootstrap_fids(feats: torch.Tensor, ref_stats, n_boot: int, seed: int) -> np.ndarray:
    """FIDs of ``n_boot`` resamples (with replacement) of ``feats``; seeded, so samples of
    the same size get the same resampling indices."""
    gen = torch.Generator().manual_seed(seed)
    n = len(feats)
    return np.array([frechet_distance(*gaussian_stats(feats[torch.randint(0, n, (n,), generator=gen)]),
                                      *ref_stats) for _ in range(n_boot)])


def measure_guidance(samples: dict, labels: torch.Tensor, *, n_boot: int = 100, seed: int = 0,
                     classifier=None) -> dict:
    """Score the samples of :func:`guidance_sweep` (``samples[w]``, requested ``labels``).

    Returns ``{w: metrics}`` with ``n``, ``class_match`` and ``class_match_se``,
    ``confident_share``, ``class_entropy``, ``fid`` and ``fid_se`` (bootstrap, ``n_boot``
    resamples), ``fid_floor`` (held-out real digits with the same class counts against the
    same reference; ``n_floor`` of them, at most 50 per class) and, for :func:`compare`,
    the per-sample ``match`` (N,) and the bootstrap FIDs ``fid_boot``.

    The FID is biased upwards at small n (by roughly the floor), so compare FIDs only at equal
    sample sizes."""
    labels = torch.as_tensor(labels).cpu()
    ref_feats, _ = classify(real_digits(train=True), classifier)
    ref_stats = gaussian_stats(ref_feats)
    out = {}
    floor = None
    for w, x in samples.items():
        if len(x) != len(labels):
            raise ValueError(f"samples[{w}] has {len(x)} images for {len(labels)} labels.")
        feats, logits = classify(x, classifier)
        match = (logits.argmax(-1) == labels).double().numpy()
        p, n = float(match.mean()), len(match)
        if floor is None:
            real = _held_out_like(labels, seed)
            floor = (fid_from_features(classify(real, classifier)[0], ref_feats), len(real))
        boot = _bootstrap_fids(feats, ref_stats, n_boot, seed)
        out[w] = {"w": float(w), "n": n, "class_match": p,
                  "class_match_se": math.sqrt(p * (1 - p) / n),
                  "confident_share": confident_share(logits), "class_entropy": class_entropy(logits),
                  "fid": fid_from_features(feats, ref_feats), "fid_se": float(boot.std(ddof=1)),
                  "fid_floor": floor[0], "n_floor": floor[1], "match": match, "fid_boot": boot}
    return out


def compare(metrics: dict, w_a: float, w_b: float, key: str = "class_match") -> tuple[float, float]:
    """``(difference, standard error)`` of ``key`` between scales w_b and w_a (value at w_b
    minus value at w_a), from paired samples: for ``class_match`` the per-sample matches
    (same noise, same labels), for ``fid`` the bootstrap resamples with the same indices."""
    a, b = metrics[float(w_a)], metrics[float(w_b)]
    if key == "class_match":
        d = b["match"] - a["match"]
        return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
    if key == "fid":
        return b["fid"] - a["fid"], float((b["fid_boot"] - a["fid_boot"]).std(ddof=1))
    raise ValueError(f"compare() knows 'class_match' and 'fid', got {key!r}.")


def summary_rows(metrics: dict) -> list[dict]:
    """The JSON-friendly part of :func:`measure_guidance`'s output, one row per scale."""
    keep = ("w", "n", "class_match", "class_match_se", "confident_share", "class_entropy",
            "fid", "fid_se", "fid_floor", "n_floor")
    return [{k: m[k] for k in keep} for m in metrics.values()]


def sweep_report(model, diffusion, scales: Sequence[float], n_per_class: int, *, steps: int = 25,
                 eta: float = 1.0, seed: int = 0, n_boot: int = 200, grid_scale: float = 3.0,
                 grid_columns: int = 8) -> tuple[dict, torch.Tensor]:
    """The guidance sweep as a shipped model records it: ``(report, grid)``, where
    ``report`` holds the sampler settings and :func:`summary_rows` (JSON-ready), and
    ``grid`` is ``grid_columns`` samples of each class (one class per row) at ``grid_scale``
    (or the last scale), for a PNG."""
    samples, labels = guidance_sweep(model, diffusion, scales, n_per_class, steps=steps, eta=eta,
                                     seed=seed)
    metrics = measure_guidance(samples, labels, n_boot=n_boot, seed=seed)
    report = {"sampler": f"ddim, {steps} steps, eta={eta:g}, x0 clipped to [-1, 1]",
              "seed": seed, "n_per_class": n_per_class, "n_boot": n_boot,
              "rows": summary_rows(metrics)}
    w = float(grid_scale) if float(grid_scale) in samples else float(scales[-1])
    x = samples[w]
    per_class = x.view(-1, n_per_class, *x.shape[1:])[:, :grid_columns]   # (classes, cols, C, H, W)
    return report, per_class.reshape(-1, *x.shape[1:])
