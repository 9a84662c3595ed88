"""FLOP counts against closed forms: a linear layer and a convolution."""
import pytest
import torch
from torch import nn

from diffusion_tutorial.flops import GPU_PEAK_FLOPS, estimate_seconds, mfu, training_step_flops


def test_linear_layer_costs_three_forward_products():
    # forward y = x W^T: 2·B·n_in·n_out; backward: the same again for dL/dx and for dL/dW.
    B, n_in, n_out = 8, 32, 16
    layer = nn.Linear(n_in, n_out)
    x = torch.randn(B, n_in, requires_grad=True)
    assert training_step_flops(layer, (x,)) == 3 * 2 * B * n_in * n_out


def test_convolution_matches_the_closed_form():
    # forward: 2·B·C_out·H·W·C_in·k² for a same-padded 3x3 convolution; input needs no grad,
    # so backward computes only the weight gradient (one more product of the same size).
    B, C_in, C_out, H, k = 2, 3, 4, 8, 3
    conv = nn.Conv2d(C_in, C_out, k, padding=1)
    x = torch.randn(B, C_in, H, H)
    forward = 2 * B * C_out * H * H * C_in * k * k
    assert training_step_flops(conv, (x,)) == 2 * forward


def test_gradients_are_left_untouched():
    layer = nn.Linear(4, 4)
    training_step_flops(layer, (torch.randn(2, 4),))
    assert all(p.grad is None for p in layer.parameters())


def test_estimate_and_mfu_are_inverse():
    flops, steps = 3e12, 1000
    seconds = estimate_seconds(flops, steps, gpu="T4", utilisation=0.2)
    assert seconds == pytest.approx(steps * flops / (0.2 * 65e12))
    assert mfu(flops, steps / seconds, GPU_PEAK_FLOPS["T4"]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="unknown GPU"):
        estimate_seconds(flops, steps, gpu="T5")
    with pytest.raises(ValueError, match="utilisation"):
        estimate_seconds(flops, steps, utilisation=0)


def test_overhead_adds_a_fixed_cost_per_step():
    flops, steps = 1e9, 500
    base = estimate_seconds(flops, steps, gpu="T4", utilisation=0.1)
    assert estimate_seconds(flops, steps, gpu="T4", utilisation=0.1, overhead_s=0.002) == \
        pytest.approx(base + steps * 0.002)
    with pytest.raises(ValueError, match="overhead_s"):
        estimate_seconds(flops, steps, overhead_s=-1)
