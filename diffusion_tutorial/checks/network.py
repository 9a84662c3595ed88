"""Checks for the network: the sinusoidal time embedding and the residual block.
Chapter: The network."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..unet import ResBlock, timestep_embedding
from .cases import call_unmodified, generator, other_devices
from .harness import CheckResult, Outcome, Stop, compare, run_check

MAX_PERIOD = 10000.0


def _embedding_by_hand(t: torch.Tensor, dim: int, freqs: torch.Tensor, order: str = "sin, cos",
                       shift: float = 0.0) -> torch.Tensor:
    """The embedding written out in float64, with switches that reproduce the usual mistakes."""
    angles = (t.detach().double().cpu()[:, None] + shift) * freqs[None, :]  # (B, dim/2)
    if order == "cos, sin":
        return torch.cat([angles.cos(), angles.sin()], 1)
    if order == "interleaved":
        return torch.stack([angles.sin(), angles.cos()], -1).flatten(1)
    return torch.cat([angles.sin(), angles.cos()], 1)


def check_timestep_embedding(fn, *, strict: bool = False, verbose: bool = True,
                             seed: int = 0) -> CheckResult:
    """Check ``fn(t, dim) -> emb``, the sinusoidal time embedding (Vaswani et al. 2017,
    section 3.5; DDPM appendix B):

        ω_i = 10000^(−i / (dim/2 − 1)),  i = 0, ..., dim/2 − 1
        emb = [sin(t ω_0), ..., sin(t ω_{dim/2−1}), cos(t ω_0), ..., cos(t ω_{dim/2−1})]

    t: (B,) tensor of 0-based timestep indices (long, or float); dim: even, at least 4.
    Returns a (B, dim) float tensor on t's device: all the sines, then all the cosines.
    Chapter: The network."""
    def mistakes(t, dim):
        i = torch.arange(dim // 2, dtype=torch.float64)
        good = torch.exp(-math.log(MAX_PERIOD) * i / (dim // 2 - 1))
        by_hand = lambda *args, **kw: _embedding_by_hand(t, dim, *args, **kw)  # noqa: E731
        return [
            ("sines and cosines swapped: all the sines come first, then all the cosines.",
             by_hand(good, "cos, sin")),
            ("sines and cosines interleaved (sin, cos, sin, cos, ...): put all the sines first, "
             "then all the cosines, torch.cat([sin, cos], dim=1).", by_hand(good, "interleaved")),
            ("wrong frequencies: you divided the exponent by dim/2 (another codebase's "
             "convention); here ω_i = 10000^(−i/(dim/2 − 1)), so the last one is exactly 1/10000.",
             by_hand(torch.exp(-math.log(MAX_PERIOD) * i / (dim // 2)))),
            ("wrong frequencies: they must fall from 1 to 1/10000, ω_i = 10000^(−i/(dim/2 − 1)) "
             "(a minus sign in the exponent).",
             by_hand(torch.exp(math.log(MAX_PERIOD) * i / (dim // 2 - 1)))),
            ("wrong frequencies: the base 10000 is missing, ω_i = 10000^(−i/(dim/2 − 1)) = "
             "exp(−log(10000) · i/(dim/2 − 1)).", by_hand(torch.exp(-i / (dim // 2 - 1)))),
            ("off by one: embed the 0-based index t as it is given (don't add 1).",
             by_hand(good, shift=1.0)),
            ("off by one: embed the 0-based index t as it is given (don't subtract 1).",
             by_hand(good, shift=-1.0)),
        ]

    def run_case(fn, t: torch.Tensor, dim: int, device="cpu") -> Outcome:
        t = t.to(device)
        out, changed = call_unmodified(fn, [t, dim])
        if changed:
            return changed
        ref = timestep_embedding(t, dim)  # float32
        if isinstance(out, torch.Tensor) and out.dtype == torch.float64:
            out = out.float()  # float64 is as good
        named = [(m, None if v is None else v.to(ref)) for m, v in mistakes(t, dim)]
        return compare(out, ref, named, like=ref, what="the embedding")

    g = generator(seed)
    mid = torch.randint(1, 999, (6,), generator=g)
    parts = [("6 random t, dim = 32", lambda fn: run_case(fn, mid, 32)),
             ("t = 0: every sine 0, every cosine 1",
              lambda fn: run_case(fn, torch.zeros(3, dtype=torch.long), 8)),
             ("t = 0, ..., 999, dim = 128", lambda fn: run_case(fn, torch.arange(1000), 128)),
             ("the smallest dim, 4", lambda fn: run_case(fn, mid, 4)),
             ("batch of 1, t = 999", lambda fn: run_case(fn, torch.tensor([999]), 16)),
             ("t as a float tensor", lambda fn: run_case(fn, mid.float(), 32))]
    parts += [(f"on {d}", lambda fn, d=d: run_case(fn, mid, 32, d)) for d in other_devices()]
    return run_check("check_timestep_embedding", fn, "fn(t, dim)", parts, strict, verbose)


LAYER_NAMES = "norm1, conv1, emb_proj, norm2, dropout, conv2, skip"


def _random_block(in_ch: int, out_ch: int, emb_dim: int, groups: int, seed: int, dtype,
                  device) -> ResBlock:
    """A package ResBlock whose every weight is random (its second conv would start at 0)."""
    block = ResBlock(in_ch, out_ch, emb_dim, dropout=0.0, groups=groups)
    g = generator(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return block.to(device, dtype).eval()


def _build_like(cls, reference: ResBlock, in_ch, out_ch, emb_dim, groups):
    """The student's block with the reference's weights, or a Stop that says why not."""
    try:
        block = cls(in_ch, out_ch, emb_dim, 0.0, groups)
    except NotImplementedError:
        return Stop("not implemented yet: replace `raise NotImplementedError` with your code.")
    except TypeError as e:
        return Stop(f"could not build it as cls(in_ch, out_ch, emb_dim, dropout, groups) ({e}).")
    if not isinstance(block, torch.nn.Module):
        return Stop(f"expected an nn.Module class, got {type(block).__name__}.")
    ours, theirs = set(reference.state_dict()), set(block.state_dict())
    if ours != theirs:
        missing, extra = sorted(ours - theirs), sorted(theirs - ours)
        return Stop("your block's layers are not the package's: "
                    + (f"missing {', '.join(missing)}; " if missing else "")
                    + (f"unexpected {', '.join(extra)}; " if extra else "")
                    + f"name them {LAYER_NAMES} (skip: a 1x1 convolution when in_ch != out_ch, "
                      "else nn.Identity()).")
    block.load_state_dict(reference.state_dict())
    return block.to(reference.conv1.weight.device, reference.conv1.weight.dtype).eval()


def check_res_block(cls, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check a residual block class ``cls(in_ch, out_ch, emb_dim, dropout, groups)`` whose
    ``forward(x, emb)`` computes (DDPM appendix B; the package's ``unet.ResBlock``)

        h   = conv1(SiLU(norm1(x))) + emb_proj(emb)      # the time, on every pixel
        out = skip(x) + conv2(dropout(SiLU(norm2(h))))

    with the package block's layer names ``norm1``, ``conv1``, ``emb_proj``, ``norm2``,
    ``dropout``, ``conv2`` and ``skip`` (a 1x1 convolution when in_ch != out_ch, otherwise the
    identity). The check loads a package block's random weights into yours and compares the
    outputs. x: (B, in_ch, H, W); emb: (B, emb_dim). Chapter: The network."""
    emb_dim, groups = 12, 4

    def run_case(cls, in_ch: int, out_ch: int, shape, dtype=torch.float32, device="cpu") -> Outcome:
        r = _random_block(in_ch, out_ch, emb_dim, groups, seed, dtype, device)
        block = _build_like(cls, r, in_ch, out_ch, emb_dim, groups)
        if isinstance(block, Stop):
            return block
        g = generator(seed + 1)
        x = torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)
        emb = torch.randn(shape[0], emb_dim, generator=g, dtype=torch.float64).to(device, dtype)
        try:
            with torch.no_grad():
                out, changed = call_unmodified(block, [x, emb])
        except RuntimeError as e:
            text = str(e).split("\n")[0]
            if "size of tensor" not in text and "must match" not in text:
                raise
            return (f"shape error ({text}): emb_proj(emb) has shape (B, out_ch); reshape it to "
                    "(B, out_ch, 1, 1) to add it to every pixel, and add skip(x), not x, when "
                    "in_ch != out_ch.")
        if changed:
            return changed
        with torch.no_grad():
            ref = r(x, emb)
            e = r.emb_proj(emb)[:, :, None, None]                 # (B, out_ch, 1, 1)
            h = r.conv1(F.silu(r.norm1(x)))
            tail = lambda h: r.conv2(F.silu(r.norm2(h)))  # noqa: E731 - the second half
            mistakes = [
                ("the time is added after the second convolution; add emb_proj(emb) to h between "
                 "the convolutions, so that conv2 can combine it with the image features.",
                 r.skip(x) + tail(h) + e),
                ("the time embedding is not used: h = conv1(SiLU(norm1(x))) + emb_proj(emb), the "
                 "embedding shaped (B, out_ch, 1, 1).", r.skip(x) + tail(h)),
                ("missing skip connection: return skip(x) + conv2(...), not conv2(...) alone.",
                 tail(h + e)),
                ("the skip adds the normalised input: add skip(x), with x as it came in.",
                 r.skip(r.norm1(x)) + tail(h + e)),
                ("SiLU is applied to the embedding first (as in DDPM's code); the package's time "
                 "MLP already ends in a linear layer, and this block projects it directly: "
                 "emb_proj(emb).",
                 r.skip(x) + tail(h + r.emb_proj(F.silu(emb))[:, :, None, None])),
                ("SiLU comes after the normalisation, before each convolution: conv(SiLU(norm(x))).",
                 r.skip(x) + r.conv2(r.norm2(F.silu(r.conv1(r.norm1(F.silu(x))) + e)))),
                ("the SiLU activations are missing: conv(SiLU(norm(x))).",
                 r.skip(x) + r.conv2(r.norm2(r.conv1(r.norm1(x)) + e))),
                ("the sum is divided by √2; this block adds skip(x) and the branch as they are.",
                 ref / math.sqrt(2)),
                ("the time is added to the input, before the first convolution; add it to h, "
                 "between the convolutions.",
                 r.skip(x) + tail(r.conv1(F.silu(r.norm1(x + e)))) if in_ch == out_ch else None),
            ]
        return compare(out, ref, mistakes, like=x, what="the block's output")

    parts = [("in_ch = out_ch = 8, (4, 8, 6, 6)", lambda c: run_case(c, 8, 8, (4, 8, 6, 6))),
             ("in_ch 8 -> out_ch 16 (1x1 skip)", lambda c: run_case(c, 8, 16, (4, 8, 6, 6))),
             ("batch of 1, non-square (1, 8, 4, 7)", lambda c: run_case(c, 8, 8, (1, 8, 4, 7))),
             ("float64", lambda c: run_case(c, 8, 16, (2, 8, 5, 5), torch.float64))]
    parts += [(f"on {d}", lambda c, d=d: run_case(c, 8, 16, (2, 8, 6, 6), torch.float32, d))
              for d in other_devices()]
    return run_check("check_res_block", cls, "cls(in_ch, out_ch, emb_dim, dropout, groups)",
                     parts, strict, verbose)
