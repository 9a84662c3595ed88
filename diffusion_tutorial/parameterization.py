"""What the network predicts (ε, x₀ or v) and how its loss is weighted over t.

Write a_t = √ᾱ_t and s_t = √(1 − ᾱ_t), so a_t² + s_t² = 1 and the forward process is

    x_t = a_t x₀ + s_t ε.                                                        (1)

A network may predict any of three quantities; each determines the other two given x_t:

* ε, the noise (DDPM, Ho et al. 2020);
* x₀, the clean image;
* v = a_t ε − s_t x₀, the "velocity" (Salimans & Ho 2022, "Progressive Distillation for
  Fast Sampling of Diffusion Models", section 4 and appendix D).

Conversions. (1) solved for one unknown gives x₀ = (x_t − s_t ε)/a_t and
ε = (x_t − a_t x₀)/s_t. For v, (x_t, v) is (x₀, ε) rotated by the angle φ_t with
cos φ_t = a_t, sin φ_t = s_t:

    x_t = a_t x₀ + s_t ε,   v = −s_t x₀ + a_t ε,

so the inverse rotation gives x₀ = a_t x_t − s_t v and ε = s_t x_t + a_t v, and
substituting the other two formulas: v = (ε − s_t x_t)/a_t = (a_t x_t − x₀)/s_t.

Loss weights. Write SNR_t = a_t²/s_t². Since ε − ε̂ = (a_t/s_t)(x̂₀ − x₀) = a_t (v − v̂),

    ‖ε − ε̂‖² = SNR_t ‖x₀ − x̂₀‖² = SNR_t/(1 + SNR_t) ‖v − v̂‖²,                    (2)

so every weighting is one function of t, read in whichever space the network predicts.
With the weight w_t on ‖x₀ − x̂₀‖² (the "x₀ space"):

* ``"simple"``: plain mean squared error of the network's own target, w_t = SNR_t for ε
  (DDPM's L_simple), 1 for x₀, SNR_t + 1 for v;
* ``"min_snr"``: w_t = min(SNR_t, γ) (Hang et al. 2023, "Efficient Diffusion Training via
  Min-SNR Weighting Strategy", eq. 9): L_simple for the noisy steps, capped where the
  almost-clean steps would dominate;
* ``"elbo"``: the variational bound's weights λ_t (DDPM eq. 12, ε space), rescaled to
  mean 1 over t (Adam's steps do not depend on a constant factor).

The weight on the target's own squared error follows from (2). Chapter: Faster: what to
predict, how to weight, how to solve.
"""
from __future__ import annotations

import torch

PREDICTIONS = ("eps", "x0", "v")
WEIGHTINGS = ("simple", "min_snr", "elbo")


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}: choose 'eps', 'x0' or 'v'.")
    return prediction


def eps_from(kind: str, out, x_t, a, s):
    """ε from a network output ``out`` of type ``kind`` ("eps", "x0" or "v")."""
    if kind == "eps":
        return out
    if kind == "x0":
        return (x_t - a * out) / s          # (1) solved for ε
    if kind == "v":
        return s * x_t + a * out            # inverse rotation
    check_prediction(kind)


def x0_from(kind: str, out, x_t, a, s):
    """x₀ from a network output ``out`` of type ``kind``."""
    if kind == "eps":
        return (x_t - s * out) / a          # (1) solved for x₀
    if kind == "x0":
        return out
    if kind == "v":
        return a * x_t - s * out            # inverse rotation
    check_prediction(kind)


def v_from(kind: str, out, x_t, a, s):
    """v = a_t ε − s_t x₀ from a network output ``out`` of type ``kind``."""
    if kind == "eps":
        return (out - s * x_t) / a
    if kind == "x0":
        return (a * x_t - out) / s
    if kind == "v":
        return out
    check_prediction(kind)


def target(kind: str, x0, noise, a, s):
    """What a network of type ``kind`` is trained to output for x_t = a x₀ + s ε."""
    check_prediction(kind)
    return {"eps": noise, "x0": x0, "v": a * noise - s * x0}[kind]


def x0_space_weight(snr: torch.Tensor, weighting: str, prediction: str = "eps",
                    gamma: float = 5.0, elbo: torch.Tensor = None) -> torch.Tensor:
    """w_t, the weight the loss puts on ‖x₀ − x̂₀‖² at each t (see the module docstring).
    ``elbo`` holds the ELBO's ε-space weights λ_t (needed for ``"elbo"`` only)."""
    check_prediction(prediction)
    if weighting == "simple":
        return {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[prediction]
    if weighting == "min_snr":
        if gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {gamma}.")
        return snr.clamp(max=gamma)
    if weighting == "elbo":
        if elbo is None:
            raise ValueError("the 'elbo' weighting needs the ELBO weights lambda_t.")
        return snr * elbo / elbo.mean()
    raise ValueError(f"unknown loss weighting {weighting!r}: choose one of {', '.join(WEIGHTINGS)}.")


def target_weight(snr: torch.Tensor, weighting: str, prediction: str = "eps",
                  gamma: float = 5.0, elbo: torch.Tensor = None) -> torch.Tensor:
    """The weight on the squared error of the network's own target, from (2):
    w_t / SNR_t for ε, w_t for x₀, w_t / (SNR_t + 1) for v."""
    w = x0_space_weight(snr, weighting, prediction, gamma, elbo)
    return {"eps": w / snr, "x0": w, "v": w / (snr + 1)}[prediction]
