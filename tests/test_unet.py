"""The UNet ε-network: shapes, input checks, conditioning, DDPM size, and that it learns."""
import pytest
import torch

from diffusion_tutorial import GaussianDiffusion
from diffusion_tutorial.unet import UNet, count_parameters

DDPM_CIFAR10 = dict(in_channels=3, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                    attention_resolutions=(16,), image_size=32, dropout=0.1, groups=32, num_heads=1)


def randomise_output(model: UNet, seed: int = 0) -> UNet:
    """Give the zero-initialised layers (the output conv and the last layer of every
    residual and attention branch, as in DDPM) random weights, so that the output is not 0
    and every branch, with the time and class embeddings, reaches it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("kwargs, shape", [
    (dict(), (3, 1, 28, 28)),  # MNIST: 28 -> 14 -> 7, attention at 7
    (dict(in_channels=3, image_size=32, channel_mults=(1, 2, 2, 2), attention_resolutions=(16, 8),
          num_res_blocks=2, dropout=0.1), (2, 3, 32, 32)),  # CIFAR-10: 32 -> 16 -> 8 -> 4
])
def test_output_shape_matches_input(kwargs, shape):
    torch.manual_seed(0)
    model = randomise_output(UNet(base_channels=16, **kwargs))
    x = torch.randn(shape)
    t = torch.randint(0, 1000, (shape[0],))
    out = model(x, t)
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    model = randomise_output(UNet(base_channels=16)).eval()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 700])
    expected = model(x, t)
    model = model.to(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=30), "multiple of 4"),
    (dict(image_size=28, channel_mults=(1, 2, 2, 2), attention_resolutions=()), "multiple of 8"),
    (dict(base_channels=12, groups=8), "groups=8"),
    (dict(attention_resolutions=(8,)), r"\[28, 14, 7\]"),
])
def test_bad_configuration_raises_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(**kwargs)


def test_bad_input_shape_and_unexpected_labels_raise():
    model = UNet(base_channels=8)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 1, 30, 30), torch.tensor([0]))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 1, 28, 28), torch.tensor([0]), torch.tensor([1]))


def test_output_depends_on_t():
    torch.manual_seed(0)
    model = randomise_output(UNet(base_channels=16)).eval()
    x = torch.randn(1, 1, 28, 28).expand(2, -1, -1, -1)
    out = model(x, torch.tensor([0, 999]))
    assert (out[0] - out[1]).abs().max() > 1e-3
    torch.testing.assert_close(model(x, 5), model(x, torch.tensor([5, 5])))  # int t broadcasts


def test_class_conditioning_and_null_class():
    torch.manual_seed(0)
    model = randomise_output(UNet(base_channels=16, num_classes=10)).eval()
    x = torch.randn(1, 1, 28, 28).expand(2, -1, -1, -1)
    t = torch.tensor([100, 100])
    out = model(x, t, torch.tensor([3, 7]))
    assert (out[0] - out[1]).abs().max() > 1e-3
    null = torch.full((2,), 10)
    torch.testing.assert_close(model(x, t), model(x, t, null))
    assert (model(x, t) - out).abs().max() > 1e-3


def test_ddpm_cifar10_size():
    with torch.device("meta"):  # no memory, no initialisation cost
        model = UNet(**DDPM_CIFAR10)
    n = count_parameters(model)
    assert abs(n - 35.7e6) / 35.7e6 < 0.05, n  # Ho et al. 2020, appendix B: 35.7M


def test_ddpm_cifar10_size_matches_diffusers():
    """The same architecture built by an independent implementation has exactly as many
    parameters (diffusers' config of the released google/ddpm-cifar10-32 model)."""
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        ours = UNet(**DDPM_CIFAR10)
        theirs = diffusers.UNet2DModel(
            sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
            block_out_channels=(128, 256, 256, 256), norm_num_groups=32, attention_head_dim=None,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    assert count_parameters(ours) == count_parameters(theirs)


def test_tiny_unet_overfits_a_tiny_batch():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    diffusion = GaussianDiffusion(timesteps=100)
    model = UNet(base_channels=16, channel_mults=(1, 2), attention_resolutions=(4,), image_size=8)
    x0 = torch.rand(4, 1, 8, 8, generator=g).round() * 2 - 1  # 4 fixed binary images in [-1, 1]
    # a fixed evaluation set: every image at 16 fixed (t, ε) pairs
    x_eval = x0.repeat(16, 1, 1, 1)
    t_eval = torch.randint(0, 100, (64,), generator=g)
    noise_eval = torch.randn(x_eval.shape, generator=g)

    def eval_loss() -> float:
        with torch.no_grad():
            return diffusion.p_losses(model, x_eval, t_eval, noise_eval).item()

    before = eval_loss()
    assert abs(before - noise_eval.pow(2).mean().item()) < 1e-6  # zero-initialised output: ε̂ = 0
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(100):
        loss = diffusion.p_losses(model, x0.repeat(4, 1, 1, 1), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.4 * before, (before, after)
    with torch.no_grad():  # the trained network uses t
        out = model(x0[:1].expand(2, -1, -1, -1), torch.tensor([0, 99]))
    assert (out[0] - out[1]).abs().max() > 1e-2


def test_attention_weights_are_the_softmax_the_block_applies():
    """Independent truth: the weights recomputed by hand from the block's own layers, rows
    that sum to 1, and the block's output rebuilt as x + proj(weights · v)."""
    from diffusion_tutorial.unet import AttentionBlock
    torch.manual_seed(0)
    heads, C, H, W = 4, 16, 3, 5
    block = randomise_output(AttentionBlock(C, heads, groups=4)).eval()
    x = torch.randn(2, C, H, W)
    weights = block.attention_weights(x)
    assert weights.shape == (2, heads, H * W, H * W)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, heads, H * W))
    d = C // heads
    tokens = block.norm(x).flatten(2).transpose(1, 2)            # (B, HW, C), row-major positions
    q, k, v = block.qkv(tokens).split(C, dim=-1)                  # each (B, HW, C)
    q, k, v = (a.reshape(2, H * W, heads, d).transpose(1, 2) for a in (q, k, v))
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / d ** 0.5
    by_hand = scores.exp() / scores.exp().sum(-1, keepdim=True)
    torch.testing.assert_close(weights, by_hand, atol=1e-6, rtol=1e-5)
    mixed = (weights @ v).transpose(1, 2).reshape(2, H * W, C)    # heads side by side again
    rebuilt = x + block.proj(mixed).transpose(1, 2).reshape(2, C, H, W)
    torch.testing.assert_close(block(x), rebuilt, atol=1e-5, rtol=1e-4)
    # attention really depends on the content: another input gives other weights
    assert (block.attention_weights(x.flip(-1)) - weights).abs().max() > 1e-3
