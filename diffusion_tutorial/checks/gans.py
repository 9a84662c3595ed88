"""Check for the GAN losses of the comparison chapter. Chapter: Diffusion vs GANs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..gan import discriminator_loss, generator_loss
from .cases import Case, call_unmodified, generator, other_devices, parts_from_cases
from .harness import CheckResult, Stop, compare, not_a_tensor, run_check

LOSSES = ("L_D = −mean log σ(D(x)) − mean log(1 − σ(D(G(z)))) and the non-saturating "
          "L_G = −mean log σ(D(G(z))) (Goodfellow et al. 2014)")
SOFTPLUS = ("write them with softplus, which never overflows: −log σ(a) = softplus(−a) and "
            "−log(1 − σ(a)) = softplus(a) (torch.nn.functional.softplus)")


def _two_scalars(out):
    """(loss_d, loss_g) or a message/Stop saying what is wrong with ``out``."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        return Stop(f"return the pair (loss_d, loss_g), got {type(out).__name__}.")
    for value, what in zip(out, ("loss_d", "loss_g")):
        problem = not_a_tensor(value, what)
        if problem:
            return problem
        if value.ndim != 0:
            return f"{what} has shape {tuple(value.shape)}; average over the batch to one number."
    return None


def check_gan_losses(fn, *, strict: bool = False, verbose: bool = True, seed: int = 0) -> CheckResult:
    """Check ``fn(real_logits, fake_logits) -> (loss_d, loss_g)``, the two GAN losses from the
    discriminator's logits D(x) for real points and D(G(z)) for generated ones, each (B,):

        L_D = −mean log σ(D(x)) − mean log(1 − σ(D(G(z))))     (binary cross-entropy)
        L_G = −mean log σ(D(G(z)))                              (the non-saturating loss)

    The loss of the generator is the "non-saturating" one of Goodfellow et al. (2014,
    section 3), not the minimax log(1 − σ(D(G(z)))). Large logits must not give inf or NaN.
    Chapter: Diffusion vs GANs."""
    def run_case(fn, case: Case):
        g = generator(seed)
        scale = case.options.get("scale", 1.0)
        real, fake = scale * case.randn(g), scale * case.randn(g)
        out, changed = call_unmodified(fn, [real, fake])
        if changed:
            return changed
        problem = _two_scalars(out)
        if problem:
            return problem
        loss_d, loss_g = out
        if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
            return f"a loss is inf or NaN for logits as large as ±{real.abs().max():.0f}: {SOFTPLUS}."
        d_mistakes = [
            (f"real and fake are swapped in L_D: {LOSSES}.", discriminator_loss(fake, real)),
            (f"L_D misses the term of the generated points: {LOSSES}.", F.softplus(-real).mean()),
            (f"L_D misses the term of the real points: {LOSSES}.", F.softplus(fake).mean()),
        ]
        g_mistakes = [
            ("this is the minimax (saturating) generator loss, log(1 − σ(D(G(z)))), whose "
             "gradient vanishes while D rejects the fakes: use the non-saturating "
             "L_G = −mean log σ(D(G(z))) = mean softplus(−D(G(z))).",
             -F.softplus(fake).mean()),
            (f"L_G has the wrong sign: the generator wants D(G(z)) large; {LOSSES}.",
             -F.softplus(-fake).mean()),
        ]
        return (compare(loss_d, discriminator_loss(real, fake), d_mistakes, like=real, what="loss_d")
                or compare(loss_g, generator_loss(fake), g_mistakes, like=real, what="loss_g"))

    cases = [Case("logits ~ N(0, 1), batch of 8", (8,)),
             Case("large logits (|D| up to ~300): no overflow", (8,), options=dict(scale=100.0)),
             Case("batch of 1", (1,)),
             Case("float64", (8,), torch.float64)]
    cases += [Case(f"on {d}", (8,), device=d) for d in other_devices()]
    return run_check("check_gan_losses", fn, "fn(real_logits, fake_logits)",
                     parts_from_cases(cases, run_case), strict, verbose)
