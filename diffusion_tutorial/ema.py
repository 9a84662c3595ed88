"""Exponential moving average (EMA) of model weights.

θ_EMA ← d · θ_EMA + (1 − d) · θ after every optimiser step. DDPM samples from the EMA
weights (Ho et al. 2020, appendix B: decay 0.9999); they are smoother than the raw
weights and give visibly cleaner images. With ``warmup`` the decay starts small,
d_n = min(d, (1 + n) / (10 + n)) after n updates, so that the average is not dominated
by the random initial weights in short runs.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``self.model``, a frozen copy of ``model`` holding the averaged weights.

    Args:
        model: the network being trained (its weights are copied at construction).
        decay: d, the weight of the old average.
        warmup: use d_n = min(d, (1 + n)/(10 + n)) for the n-th update.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(_unwrap(model)).eval()
        self.model.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay used by the next update."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ_EMA ← d θ_EMA + (1 − d) θ = θ_EMA + (1 − d)(θ − θ_EMA), for all parameters in one
        foreach call (a few fused kernels on a GPU instead of one launch per tensor);
        buffers (e.g. norm statistics) are copied."""
        d = self.current_decay()
        model = _unwrap(model)
        ema_params = list(self.model.parameters())
        params = [p.detach().to(e.dtype) for e, p in zip(ema_params, model.parameters())]
        if ema_params:
            torch._foreach_lerp_(ema_params, params, 1 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.num_updates += 1

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (e.g. to sample with them)."""
        _unwrap(model).load_state_dict(self.model.state_dict())

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        if "weights" in state:
            self.model.load_state_dict(state["weights"])

    def to(self, device) -> "EMA":
        self.model.to(device)
        return self


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
