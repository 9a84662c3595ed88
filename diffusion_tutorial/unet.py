"""The noise-prediction network ε_θ(x_t, t): a UNet with time embedding and self-attention.

The architecture follows the DDPM UNet (Ho et al. 2020, appendix B), itself a
PixelCNN++-style UNet with group normalisation and Transformer sinusoidal time embeddings.
It knows nothing of the diffusion equations: it maps a noisy image and a timestep index
to a tensor of the same shape (the predicted noise ε). The book walks through it block
by block. Chapter: The network.

Shapes, for the default MNIST setting (base_channels C = 32, channel_mults (1, 2, 4),
one residual block per level, attention at 7x7)::

    t (B,)  -> sinusoidal embedding (B, C) -> MLP -> emb (B, 4C)   [+ class embedding]
    x (B, 1, 28, 28)
      conv_in                          -> (B, C, 28, 28)      skip
      level 0: ResBlock                -> (B, C, 28, 28)      skip
               Downsample (stride 2)   -> (B, C, 14, 14)      skip
      level 1: ResBlock                -> (B, 2C, 14, 14)     skip
               Downsample              -> (B, 2C, 7, 7)       skip
      level 2: ResBlock + Attention    -> (B, 4C, 7, 7)       skip
      middle:  ResBlock, Attention, ResBlock -> (B, 4C, 7, 7)
      up path: per level, num_res_blocks + 1 ResBlocks, each taking one skip
               (concatenated on channels), then Upsample (nearest x2 + conv)
                                       -> (B, C, 28, 28)
      GroupNorm, SiLU, conv_out (zero-initialised) -> (B, 1, 28, 28)

Every ResBlock adds the embedding, projected to its channel count, between its two
convolutions, so each layer knows the noise level. The last layer of every residual and
attention branch and the output convolution start at zero (as in DDPM's code), so an
untrained UNet predicts ε̂ = 0. With ``base_channels=128,
channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention_resolutions=(16,),
dropout=0.1, groups=32, num_heads=1`` on 3x32x32 images this is the DDPM CIFAR-10 model
(35.7M parameters). The module also runs in ``torch.channels_last`` memory format, which
is the faster layout for convolutions on CPUs.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .utils import as_timestep_tensor


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timestep indices (Vaswani et al. 2017, section 3.5; DDPM
    appendix B): e_{2i} = sin(t · ω_i), e_{2i+1} = cos(t · ω_i) with
    ω_i = max_period^(−i / (dim/2 − 1)), sines first then cosines. t: (B,) -> (B, dim)."""
    if dim % 2 or dim < 4:
        raise ValueError(f"the time embedding dimension must be even and >= 4, got {dim}.")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / (half - 1))
    args = t.float()[:, None] * freqs[None, :]  # (B, dim/2)
    return torch.cat([args.sin(), args.cos()], dim=1)  # (B, dim)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer's weights and bias, so the residual branch it ends starts as 0."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + W·emb;  out = skip(x) + conv(dropout(SiLU(GN(h)))).

    The second convolution starts at zero (as in DDPM's code), so a fresh block is its
    skip path and the residual branch grows in during training."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        h = h + self.emb_proj(emb)[:, :, None, None]  # emb: (B, E) -> (B, out, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H·W positions, with a residual connection.

    Tokens are taken as (B, H·W, C) via a permute, which is a free view when the input
    is in channels_last layout; the result comes back in that layout too."""

    def __init__(self, channels: int, num_heads: int, groups: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the {channels} channels at an "
                             "attention resolution; pick a divisor (1 reproduces DDPM).")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero(nn.Linear(channels, channels))

    def _qkv(self, x: torch.Tensor):
        """Queries, keys and values of the H·W positions (row-major), each (B, heads, HW, d)."""
        B, C, H, W = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, HW, C)
        qkv = self.qkv(tokens).reshape(B, H * W, 3, self.num_heads, C // self.num_heads)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(q kᵀ / √d) of every head, (B, heads, HW, HW), for the block's input x:
        row i says how query position i (row-major over H x W) spreads its attention over
        all positions; each row sums to 1 (Vaswani et al. 2017, eq. 1). Chapter: The network."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self._qkv(x)  # each (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √d) v
        out = self.proj(out.transpose(1, 2).reshape(B, H * W, C))  # (B, HW, C)
        return x + out.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)


class Downsample(nn.Module):
    """3x3 convolution with stride 2: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """ε_θ(x_t, t[, y]): predicts the noise in ``x_t``; output shape = input shape.

    Args:
        in_channels: image channels (1 for MNIST, 3 for CIFAR-10).
        out_channels: output channels; defaults to ``in_channels`` (ε has x's shape).
        base_channels: channels at the first level; level i has base_channels · mults[i].
        channel_mults: one multiplier per resolution level; the image is halved between
            levels, so ``image_size`` must be divisible by 2^(len(channel_mults) − 1).
        num_res_blocks: residual blocks per level on the way down (up: one more).
        attention_resolutions: feature-map sizes (e.g. 16 or 7) that get self-attention.
        image_size: height = width of the input images.
        dropout: dropout rate inside the residual blocks (DDPM CIFAR-10: 0.1).
        num_classes: if set, the model is class-conditional: ``y`` in 0..num_classes,
            where index ``num_classes`` is the null ("no class") label used by
            classifier-free guidance; ``y=None`` means all null.
        groups: GroupNorm groups; must divide every level's channel count.
        num_heads: attention heads (DDPM uses 1; parameter count does not depend on it).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: Optional[int] = None,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (7,),
        image_size: int = 28,
        dropout: float = 0.0,
        num_classes: Optional[int] = None,
        groups: int = 8,
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        channel_mults = tuple(int(m) for m in channel_mults)
        levels = len(channel_mults)
        factor = 2 ** (levels - 1)
        if levels < 1 or num_res_blocks < 1 or image_size < 1:
            raise ValueError("channel_mults needs at least one level, num_res_blocks >= 1 and "
                             "image_size >= 1.")
        if image_size % factor:
            lower = factor * (image_size // factor)
            near = " or ".join(str(n) for n in (lower, lower + factor) if n > 0)
            max_levels = (image_size & -image_size).bit_length()  # 1 + times it halves evenly
            raise ValueError(
                f"image_size={image_size} cannot be halved {levels - 1} times "
                f"(channel_mults={channel_mults} has {levels} levels): use a multiple of {factor} "
                f"such as {near}, or at most {max_levels} channel_mults for size {image_size}.")
        widths = [base_channels * m for m in channel_mults]
        if any(w % groups for w in widths):
            raise ValueError(f"groups={groups} must divide every level's channels {widths}: "
                             "make base_channels a multiple of groups.")
        resolutions = [image_size // 2 ** i for i in range(levels)]
        unknown = sorted(set(attention_resolutions) - set(resolutions))
        if unknown:
            raise ValueError(f"attention_resolutions {unknown} are not feature-map sizes of this "
                             f"UNet; the sizes are {resolutions}.")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.downsample_factor = factor
        self.base_channels = base_channels
        emb_dim = 4 * base_channels

        # Time embedding: sinusoid (B, C) -> Linear, SiLU, Linear -> (B, 4C)   (DDPM app. B)
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(),
                                      nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        def res(i: int, o: int) -> ResBlock:
            return ResBlock(i, o, emb_dim, dropout, groups)

        def attn(ch: int, size: int) -> nn.Module:
            return AttentionBlock(ch, num_heads, groups) if size in attention_resolutions else nn.Identity()

        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [base_channels], base_channels  # channel count of every stored skip
        for level, (width, size) in enumerate(zip(widths, resolutions)):
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([res(ch, width), attn(width, size)]))
                ch = width
                skips.append(ch)
            if level < levels - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)

        self.mid = nn.ModuleList([res(ch, ch), AttentionBlock(ch, num_heads, groups), res(ch, ch)])

        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            width, size = widths[level], resolutions[level]
            for _ in range(num_res_blocks + 1):
                self.up.append(nn.ModuleList([res(ch + skips.pop(), width), attn(width, size)]))
                ch = width
            if level > 0:
                self.up.append(Upsample(ch))

        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = _zero(nn.Conv2d(ch, self.out_channels, 3, padding=1))

    def embed(self, t: torch.Tensor, batch: int, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The conditioning vector: time MLP of the sinusoid of t, plus the class embedding."""
        t = as_timestep_tensor(t, batch, self.conv_in.weight.device)
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))  # (B, 4C)
        if self.class_emb is None:
            if y is not None:
                raise ValueError("this UNet is unconditional (num_classes=None): call it "
                                 "without y, or build it with num_classes set.")
            return emb
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=emb.device)
        if y.shape != (batch,):
            raise ValueError(f"y must be a ({batch},) tensor of labels in 0..{self.num_classes} "
                             f"({self.num_classes} = null class), got shape {tuple(y.shape)}.")
        return emb + self.class_emb(y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, C, H, W = x.shape
        if C != self.in_channels or H % self.downsample_factor or W % self.downsample_factor:
            raise ValueError(
                f"input of shape {tuple(x.shape)} does not fit this UNet: expected {self.in_channels} "
                f"channels and height/width divisible by {self.downsample_factor} "
                f"(built for {self.image_size}x{self.image_size}).")
        emb = self.embed(t, B, y)  # (B, 4C)

        h = self.conv_in(x)  # (B, C, H, W)
        hs = [h]
        for block in self.down:
            if isinstance(block, Downsample):
                h = block(h)  # (B, ch, H/2, W/2)
            else:
                h = block[1](block[0](h, emb))
            hs.append(h)

        h = self.mid[0](h, emb)
        h = self.mid[2](self.mid[1](h), emb)  # (B, ch, H/f, W/f)

        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h)  # (B, ch, 2H, 2W)
            else:
                h = torch.cat([h, hs.pop()], dim=1)  # (B, ch + skip_ch, H, W)
                h = block[1](block[0](h, emb))
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, H, W)
