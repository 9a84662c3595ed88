"""The network and training checks accept correct code and name the mistake in wrong code.

Each wrong implementation is written the way a student might write it; each test asserts
that the check fails and that its message names the actual mistake."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffusion_tutorial import checks as C
from diffusion_tutorial.unet import ResBlock, timestep_embedding


# ---------------------------------------------------------------- the time embedding
def embedding(t, dim, *, divide_by=None, sign=-1.0, base=10000.0, order="sin, cos", shift=0):
    half = dim // 2
    i = torch.arange(half, device=t.device, dtype=torch.float64)
    freqs = base ** (sign * i / (divide_by or half - 1))
    angles = (t.double()[:, None] + shift) * freqs
    parts = [angles.sin(), angles.cos()]
    if order == "interleaved":
        return torch.stack(parts, -1).flatten(1).float()
    return torch.cat(parts[::-1] if order == "cos, sin" else parts, 1).float()


def test_independent_embedding_and_the_package_pass():
    assert C.check_timestep_embedding(embedding, verbose=False)
    assert C.check_timestep_embedding(timestep_embedding, verbose=False)
    assert C.check_timestep_embedding(lambda t, d: embedding(t, d).double(), verbose=False)


@pytest.mark.parametrize("kwargs, words", [
    (dict(order="cos, sin"), "swapped"),
    (dict(order="interleaved"), "interleaved"),
    (dict(divide_by=16), "divided the exponent by dim/2"),   # dim 32 in the first case
    (dict(sign=1.0), "minus sign"),
    (dict(base=math.e), "base 10000 is missing"),
    (dict(shift=1), "don't add 1"),
    (dict(shift=-1), "don't subtract 1"),
])
def test_embedding_mistakes_are_named(kwargs, words):
    if "divide_by" in kwargs:
        wrong = lambda t, d: embedding(t, d, divide_by=d // 2)  # noqa: E731
    else:
        wrong = lambda t, d: embedding(t, d, **kwargs)  # noqa: E731
    result = C.check_timestep_embedding(wrong, verbose=False)
    assert not result and words in result.messages[0], result.report()


def test_embedding_stub_and_wrong_shape():
    result = C.check_timestep_embedding(lambda t, d: ..., verbose=False)
    assert not result and "placeholder" in result.messages[0]
    result = C.check_timestep_embedding(lambda t, d: embedding(t, d)[:, : d // 2], verbose=False)
    assert not result and "wrong shape" in result.messages[0]


# ---------------------------------------------------------------- the residual block
class Block(nn.Module):
    """A student's block: the given layers and a forward written from the equation."""

    def __init__(self, in_ch, out_ch, emb_dim, dropout=0.0, groups=8):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(emb).view(*emb.shape[:1], -1, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


def block_with(forward):
    return type("Wrong", (Block,), {"forward": forward})


def test_independent_block_and_the_package_pass():
    assert C.check_res_block(Block, verbose=False)
    assert C.check_res_block(ResBlock, verbose=False)


def time_after_second_conv(self, x, emb):
    h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
    return self.skip(x) + h + self.emb_proj(emb)[:, :, None, None]


def no_time(self, x, emb):
    h = self.conv1(F.silu(self.norm1(x)))
    return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


def no_skip(self, x, emb):
    h = self.conv1(F.silu(self.norm1(x))) + self.emb_proj(emb)[:, :, None, None]
    return self.conv2(F.silu(self.norm2(h)))


def silu_on_emb(self, x, emb):
    h = self.conv1(F.silu(self.norm1(x))) + self.emb_proj(F.silu(emb))[:, :, None, None]
    return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


def skip_rescaled(self, x, emb):
    return Block.forward(self, x, emb) / math.sqrt(2)


def raw_skip(self, x, emb):  # x + h: fails when the channel count changes
    h = self.conv1(F.silu(self.norm1(x))) + self.emb_proj(emb)[:, :, None, None]
    return x + self.conv2(F.silu(self.norm2(h)))


@pytest.mark.parametrize("forward, words", [
    (time_after_second_conv, "after the second convolution"),
    (no_time, "time embedding is not used"),
    (no_skip, "missing skip connection"),
    (silu_on_emb, "SiLU is applied to the embedding"),
    (skip_rescaled, "divided by √2"),
    (raw_skip, "add skip(x), not x"),
])
def test_block_mistakes_are_named(forward, words):
    result = C.check_res_block(block_with(forward), verbose=False)
    assert not result and any(words in m for m in result.messages), result.report()


def test_block_stub_and_other_layer_names_stop_early():
    stub = block_with(lambda self, x, emb: (_ for _ in ()).throw(NotImplementedError))
    result = C.check_res_block(stub, verbose=False)
    assert not result and "not implemented" in result.messages[0]
    assert [p.passed for p in result.parts][1:] == [None] * (len(result.parts) - 1)

    class Renamed(Block):
        def __init__(self, *args):
            super().__init__(*args)
            self.time = self.emb_proj
            del self.emb_proj
    result = C.check_res_block(Renamed, verbose=False)
    assert not result and "missing emb_proj.bias, emb_proj.weight" in result.messages[0]


# ---------------------------------------------------------------- the moving average
@torch.no_grad()
def ema_update(ema_params, params, decay):
    for e, p in zip(ema_params, params):
        e.mul_(decay).add_(p, alpha=1 - decay)


def test_ema_update_passes():
    assert C.check_ema_update(ema_update, verbose=False)


@torch.no_grad()
def swapped(ema_params, params, decay):
    for e, p in zip(ema_params, params):
        e.mul_(1 - decay).add_(p, alpha=decay)


@torch.no_grad()
def copied(ema_params, params, decay):
    for e, p in zip(ema_params, params):
        e.copy_(p)


def new_list(ema_params, params, decay):
    return [decay * e + (1 - decay) * p for e, p in zip(ema_params, params)]


def with_grad(ema_params, params, decay):  # no torch.no_grad(): the average joins autograd
    for e, p in zip(ema_params, params):
        e.mul_(decay).add_(p, alpha=1 - decay)


@torch.no_grad()
def rebinds(ema_params, params, decay):  # a loop variable rebound: nothing changes
    for e, p in zip(ema_params, params):
        e = decay * e + (1 - decay) * p  # noqa: F841


@pytest.mark.parametrize("fn, words", [
    (swapped, "swapped"), (copied, "replaced by the weights"), (new_list, "in place"),
    (with_grad, "torch.no_grad()"), (rebinds, "did not change"),
])
def test_ema_mistakes_are_named(fn, words):
    result = C.check_ema_update(fn, verbose=False)
    assert not result and any(words in m for m in result.messages), result.report()


# ---------------------------------------------------------------- clipping in a DDIM step
def ddim_clipping(low, high, recompute):
    def step(x_t, t, t_prev, eps, alphas_cumprod, eta, z):
        ab = alphas_cumprod[t].view(-1, *[1] * (x_t.ndim - 1))
        abp = torch.where(t_prev >= 0, alphas_cumprod[t_prev.clamp(min=0)], 1.0).view_as(ab)
        x0 = ((x_t - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(low, high)
        if recompute:
            eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        sigma = eta * ((1 - abp) / (1 - ab) * (1 - ab / abp)).sqrt()
        return abp.sqrt() * x0 + (1 - abp - sigma ** 2).clamp(min=0).sqrt() * eps + sigma * z
    return step


@pytest.mark.parametrize("low, high, recompute, words", [
    (0, 1, False, "clipped to [0, 1]"),
    (-1, 1, False, "while ε is kept"),
    (-1, 1, True, "and ε recomputed"),
])
def test_ddim_clipping_is_named(low, high, recompute, words):
    result = C.check_ddim_step(ddim_clipping(low, high, recompute), verbose=False)
    assert not result and words in result.messages[0], result.report()
