"""What runs fast on this device: mixed precision, torch.compile, memory layout, fused AdamW.

Mixed precision (``mixed_precision``; Micikevicius et al. 2018 for fp16 with loss scaling):

| value | CUDA, compute capability ≥ 8.0 (A100, L4, H100) | older CUDA (T4, V100) | CPU, MPS |
|---|---|---|---|
| ``"auto"`` | bf16 autocast | fp16 autocast + GradScaler | fp32 |
| ``"bf16"`` | bf16 autocast | bf16 autocast (emulated: slow) | bf16 autocast |
| ``"fp16"`` | fp16 autocast + GradScaler | fp16 autocast + GradScaler | fp16 autocast + GradScaler |
| ``"no"`` | fp32 | fp32 | fp32 |

bf16 keeps fp32's exponent range, so it needs no loss scaling; fp16 does, or small gradients
underflow to zero: the GradScaler multiplies the loss by a large factor before backward and
skips steps whose gradients overflow. ``compile`` and ``channels_last`` default to None,
which means on for CUDA and off elsewhere. Chapter: Training.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

PRECISIONS = ("auto", "bf16", "fp16", "no")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def autocast_dtype(device, mixed_precision: str = "auto") -> Optional[torch.dtype]:
    """The autocast dtype for ``device``, or None for fp32 (see the module's table)."""
    device = torch.device(device)
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {mixed_precision!r}.")
    if mixed_precision == "no":
        return None
    if mixed_precision != "auto":
        return torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    if device.type != "cuda":
        return None                            # CPU and MPS train in fp32
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def autocast(device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(device, dtype: Optional[torch.dtype]):
    """A GradScaler for fp16 (loss scaling), disabled for bf16 and fp32 (then its
    ``scale``, ``unscale_``, ``step`` and ``update`` are plain pass-throughs)."""
    device_type = torch.device(device).type
    enabled = dtype == torch.float16
    if hasattr(torch.amp, "GradScaler"):       # torch >= 2.3; any device type
        return torch.amp.GradScaler(device_type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device_type == "cuda")


def use_compile(compile: Optional[bool], device) -> bool:
    """``torch.compile`` the network? None (auto) means yes on CUDA only."""
    return torch.device(device).type == "cuda" if compile is None else bool(compile)


def use_channels_last(channels_last: Optional[bool], device) -> bool:
    """channels_last memory layout? None (auto) means yes on CUDA, whose convolutions run
    fastest in NHWC with bf16/fp16 (tensor cores)."""
    return torch.device(device).type == "cuda" if channels_last is None else bool(channels_last)


def adamw_options(device) -> dict:
    """``fused=True`` on CUDA (one kernel for all parameters, and no host sync with a
    GradScaler); torch's default (foreach) elsewhere, which keeps CPU runs as before."""
    return {"fused": True} if torch.device(device).type == "cuda" else {}


def describe(dtype: Optional[torch.dtype], scaler) -> str:
    """``"bf16 autocast"``, ``"fp16 autocast + GradScaler"`` or ``"fp32"``."""
    if dtype is None:
        return "fp32"
    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return f"{name} autocast" + (" + GradScaler" if scaler.is_enabled() else "")
