"""The MLP ε-network for 2-D toy data: shapes, conditioning, and that it learns ε."""
import pytest
import torch

from diffusion_tutorial import GaussianDiffusion
from diffusion_tutorial.mlp import MLPDenoiser


def randomise_output(model: MLPDenoiser) -> MLPDenoiser:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.out.weight.copy_(torch.randn(model.out.weight.shape, generator=g))
    return model


@pytest.mark.parametrize("dim", [2, 3])
def test_output_shape(dim):
    model = MLPDenoiser(dim=dim, hidden=32, layers=2)
    out = model(torch.randn(5, dim), torch.randint(0, 1000, (5,)))
    assert out.shape == (5, dim)
    assert (out == 0).all()  # zero-initialised last layer: ε̂ = 0 before training
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        MLPDenoiser(dim=3)(torch.randn(5, 2), torch.zeros(5, dtype=torch.long))


def test_depends_on_t_and_y_and_null_class():
    torch.manual_seed(0)
    model = randomise_output(MLPDenoiser(hidden=32, num_classes=4))
    x = torch.randn(1, 2).expand(2, -1)
    by_t = model(x, torch.tensor([0, 999]))
    assert (by_t[0] - by_t[1]).abs().max() > 1e-3
    t = torch.tensor([50, 50])
    by_y = model(x, t, torch.tensor([0, 3]))
    assert (by_y[0] - by_y[1]).abs().max() > 1e-3
    torch.testing.assert_close(model(x, t), model(x, t, torch.tensor([4, 4])))


def test_learns_eps_of_a_gaussian():
    """For x_0 ~ N(μ, s² I), x_t = a x_0 + b ε with a = √ᾱ_t, b = √(1 − ᾱ_t), the best
    predictor is E[ε | x_t] = b (x_t − a μ) / (a² s² + b²), whose squared error per
    dimension is a² s² / (a² s² + b²). The trained MLP must come close to that optimum,
    far below the 'predict zero' loss of 1."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    T, mu, s = 100, torch.tensor([1.5, -1.0]), 0.5
    diffusion = GaussianDiffusion(timesteps=T)
    a2 = diffusion.alphas_cumprod.double()
    optimum = (a2 * s**2 / (a2 * s**2 + 1 - a2)).mean().item()  # t uniform over the T steps

    x_eval = mu + s * torch.randn(8192, 2, generator=g)
    t_eval = torch.arange(T).repeat(8192 // T + 1)[:8192]
    noise_eval = torch.randn(8192, 2, generator=g)

    def oracle(x_t, t):
        a = diffusion.sqrt_alphas_cumprod[t][:, None]
        b = diffusion.sqrt_one_minus_alphas_cumprod[t][:, None]
        return b * (x_t - a * mu) / (a**2 * s**2 + b**2)

    with torch.no_grad():
        oracle_loss = diffusion.p_losses(oracle, x_eval, t_eval, noise_eval).item()
    assert abs(oracle_loss - optimum) < 0.03  # the evaluation set measures what it should

    model = MLPDenoiser(hidden=64, layers=2, timesteps=T)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(300):
        x0 = mu + s * torch.randn(256, 2, generator=g)
        loss = diffusion.p_losses(model, x0, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        learned = diffusion.p_losses(model, x_eval, t_eval, noise_eval).item()
    assert learned < 0.75  # clearly below predicting zero (loss 1)
    assert learned < oracle_loss + 0.05, (learned, oracle_loss)
