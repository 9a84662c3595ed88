"""The checks of the 'Beyond' chapters: classifier-free guidance and the GAN losses.
The reference and an independent solution pass; each named mistake, written as a student
would write it, fails with its message."""
import torch
import torch.nn.functional as F
import pytest

from diffusion_tutorial.checks import check_gan_losses, check_guided_eps


# ---------------------------------------------------------------- guided ε
def guided_right(model, x_t, t, y, w):
    eps_uncond = model(x_t, t, None)
    return eps_uncond + w * (model(x_t, t, y) - eps_uncond)


def guided_null_label(model, x_t, t, y, w):   # the null label passed explicitly (index 10)
    eps_uncond = model(x_t, t, torch.full_like(y, 10))
    return (1 - w) * eps_uncond + w * model(x_t, t, y)


def test_right_answers_pass():
    assert check_guided_eps(guided_right, verbose=False)
    assert check_guided_eps(guided_null_label, verbose=False)


@pytest.mark.parametrize("wrong, words", [
    (lambda m, x, t, y, w: (1 + w) * m(x, t, y) - w * m(x, t, None), "Ho & Salimans"),
    (lambda m, x, t, y, w: m(x, t, y) + w * (m(x, t, None) - m(x, t, y)), "swapped"),
    (lambda m, x, t, y, w: w * m(x, t, y), "unconditional prediction is missing"),
    (lambda m, x, t, y, w: m(x, t, None) + w * m(x, t, y), "the difference"),
    (lambda m, x, t, y, w: m(x, t, y), "conditional prediction whatever w"),
])
def test_guidance_mistakes_are_named(wrong, words):
    result = check_guided_eps(wrong, verbose=False)
    assert not result and any(words in m for m in result.messages), result.report()


def test_guidance_strict_raises_and_placeholder_stops():
    with pytest.raises(AssertionError, match="check_guided_eps"):
        check_guided_eps(lambda m, x, t, y, w: 2 * m(x, t, y), strict=True, verbose=False)
    result = check_guided_eps(lambda m, x, t, y, w: ..., verbose=False)
    assert not result and "placeholder" in result.report() and "skipped" in result.report()


# ---------------------------------------------------------------- GAN losses
def gan_right(real, fake):
    return F.softplus(-real).mean() + F.softplus(fake).mean(), F.softplus(-fake).mean()


def gan_bce(real, fake):   # an independent solution: PyTorch's binary cross-entropy on logits
    bce = F.binary_cross_entropy_with_logits
    loss_d = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    return loss_d, bce(fake, torch.ones_like(fake))


def test_gan_right_answers_pass():
    assert check_gan_losses(gan_right, verbose=False)
    assert check_gan_losses(gan_bce, verbose=False)


@pytest.mark.parametrize("wrong, words", [
    (lambda r, f: (gan_right(r, f)[0], -F.softplus(f).mean()), "minimax"),
    (lambda r, f: (gan_right(r, f)[0], -F.softplus(-f).mean()), "wrong sign"),
    (lambda r, f: (gan_right(f, r)[0], gan_right(r, f)[1]), "swapped"),
    (lambda r, f: (F.softplus(-r).mean(), gan_right(r, f)[1]), "generated points"),
    (lambda r, f: (-torch.log(torch.sigmoid(r)).mean() - torch.log(1 - torch.sigmoid(f)).mean(),
                   -torch.log(torch.sigmoid(f)).mean()), "softplus"),
    (lambda r, f: gan_right(r, f)[0], "pair"),
])
def test_gan_mistakes_are_named(wrong, words):
    result = check_gan_losses(wrong, verbose=False)
    assert not result and any(words in m for m in result.messages), result.report()
