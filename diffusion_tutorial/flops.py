"""The arithmetic of a training step, and what it means in seconds on a given GPU.

A training step of a network costs about three times its forward pass: the backward pass
computes a gradient for the input and one for the weights of every layer, each as large
as the forward product (Kaplan et al. 2020, section 2.1). :func:`training_step_flops`
counts the floating-point operations of one real forward and backward pass with torch's
``FlopCounterMode`` (matrix products and convolutions; the cheap element-wise work is not
counted). :func:`estimate_seconds` turns a count into time on a GPU from its peak rate and
an assumed *model FLOP utilisation* (MFU): the share of that peak a real step achieves,
which is far below 1 for small convolutional networks. Chapters use both to size their
full-size mode; benchmarks use :func:`mfu` to report how much of a chip a run used.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense peak rates in FLOP/s at the precision each GPU trains in natively (bf16 from
# compute capability 8.0, fp16 tensor cores before), from the vendors' datasheets.
GPU_PEAK_FLOPS = {
    "T4": 65e12,        # fp16 tensor cores (Colab's free GPU)
    "V100": 125e12,     # fp16 tensor cores
    "L4": 121e12,       # bf16, dense
    "A100": 312e12,     # bf16, dense
    "H100": 989e12,     # bf16, dense (SXM)
    "H200": 989e12,     # bf16, dense
}


def training_step_flops(model: torch.nn.Module, inputs: tuple,
                        loss_fn: Optional[Callable[..., torch.Tensor]] = None) -> int:
    """Floating-point operations of one forward and backward pass of ``model(*inputs)``.

    ``loss_fn(output)`` turns the output into the scalar that is differentiated (default:
    its mean). The model's gradients are left as they were before the call."""
    saved = [p.grad for p in model.parameters()]
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(*inputs)
        loss = loss_fn(out) if loss_fn is not None else out.float().mean()
        loss.backward()
    for p, g in zip(model.parameters(), saved):
        p.grad = g
    return int(counter.get_total_flops())


def estimate_seconds(flops_per_step: float, steps: int, gpu: str = "T4",
                     utilisation: float = 0.25, overhead_s: float = 0.0) -> float:
    """Seconds for ``steps`` steps of ``flops_per_step`` on ``gpu`` at the given MFU:
    steps · (flops / (utilisation · peak) + overhead_s). ``overhead_s`` is a fixed cost per
    step (kernel launches, Python), which bounds small networks in eager mode from below."""
    if gpu not in GPU_PEAK_FLOPS:
        raise ValueError(f"unknown GPU {gpu!r}: choose one of {', '.join(GPU_PEAK_FLOPS)}.")
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {utilisation}.")
    if overhead_s < 0:
        raise ValueError(f"overhead_s must be >= 0 seconds per step, got {overhead_s}.")
    return steps * (flops_per_step / (utilisation * GPU_PEAK_FLOPS[gpu]) + overhead_s)


def mfu(flops_per_step: float, steps_per_second: float, peak_flops: float) -> float:
    """Model FLOP utilisation: achieved FLOP/s over the chip's peak FLOP/s."""
    return flops_per_step * steps_per_second / peak_flops
