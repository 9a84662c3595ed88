"""ε, x_0 and v parameterizations and the loss weightings, against closed forms.

The truth: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε with known x_0 and ε, computed in float64; v from
its definition (Salimans & Ho 2022) and from diffusers' ``get_velocity``; the weights from
their formulas in Hang et al. 2023 (min-SNR) and DDPM eq. 12 (ELBO), written out here.
"""
import json

import pytest
import torch

from diffusion_tutorial import GaussianDiffusion, get_config
from diffusion_tutorial import parameterization as P
from diffusion_tutorial.config import ConfigError, TrainConfig
from diffusion_tutorial.pretrained import build_diffusion

T = 1000
TS = torch.tensor([0, 1, 10, 250, 500, 900, 999])


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(len(TS), 1, 6, 6, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(len(TS), 1, 6, 6, generator=g, dtype=torch.float64)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)[TS]
    a, s = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
    return x0, eps, a, s, a * x0 + s * eps


def test_every_conversion_recovers_the_truth(data):
    x0, eps, a, s, x_t = data
    truth = {"eps": eps, "x0": x0, "v": a * eps - s * x0}      # v by its definition
    for kind in P.PREDICTIONS:
        out = P.target(kind, x0, eps, a, s)
        torch.testing.assert_close(out, truth[kind], atol=1e-12, rtol=0)
        for name, convert in (("eps", P.eps_from), ("x0", P.x0_from), ("v", P.v_from)):
            torch.testing.assert_close(convert(kind, out, x_t, a, s), truth[name], atol=1e-9, rtol=1e-9,
                                       msg=f"{kind} -> {name}")


def test_round_trips_are_the_identity_for_any_output(data):
    """Not only the true target: any tensor converted to another type and back is unchanged."""
    _, _, a, s, x_t = data
    out = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    to = {"eps": P.eps_from, "x0": P.x0_from, "v": P.v_from}
    for src in P.PREDICTIONS:
        for mid in P.PREDICTIONS:
            back = to[src](mid, to[mid](src, out, x_t, a, s), x_t, a, s)
            torch.testing.assert_close(back, out, atol=1e-8, rtol=1e-8, msg=f"{src} -> {mid} -> {src}")


def test_v_matches_diffusers_get_velocity():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02,
                                    beta_schedule="linear")
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(len(TS), 1, 6, 6, generator=g), torch.randn(len(TS), 1, 6, 6, generator=g)
    ours = GaussianDiffusion(timesteps=T).v_target(x0, TS, noise)
    torch.testing.assert_close(ours, sched.get_velocity(x0, noise, TS), atol=2e-5, rtol=0)


def test_squared_errors_relate_through_the_snr(data):
    """‖ε − ε̂‖² = SNR ‖x_0 − x̂_0‖² = SNR/(1 + SNR) ‖v − v̂‖² for any wrong prediction."""
    x0, eps, a, s, x_t = data
    snr = (a / s) ** 2
    wrong = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for kind in P.PREDICTIONS:
        e_eps = (P.eps_from(kind, wrong, x_t, a, s) - eps).pow(2).sum((1, 2, 3))
        e_x0 = (P.x0_from(kind, wrong, x_t, a, s) - x0).pow(2).sum((1, 2, 3))
        e_v = (P.v_from(kind, wrong, x_t, a, s) - (a * eps - s * x0)).pow(2).sum((1, 2, 3))
        torch.testing.assert_close(e_eps, snr.flatten() * e_x0, rtol=1e-8, atol=0)
        torch.testing.assert_close(e_eps, (snr / (1 + snr)).flatten() * e_v, rtol=1e-8, atol=0)


def _independent_snr_and_elbo():
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    lam = betas ** 2 / (2 * betas * (1 - betas) * (1 - abar))    # DDPM eq. 12 with σ_t² = β_t
    return abar / (1 - abar), lam


@pytest.mark.parametrize("prediction", P.PREDICTIONS)
def test_loss_weights_follow_their_formulas(prediction):
    snr, lam = _independent_snr_and_elbo()
    to_target = {"eps": 1 / snr, "x0": torch.ones_like(snr), "v": 1 / (snr + 1)}[prediction]
    expected = {"simple": torch.ones_like(snr),
                "min_snr": snr.clamp(max=5.0) * to_target,                 # Hang et al. eq. 9
                "elbo": (lam / lam.mean()) * snr * to_target}
    for weighting, w in expected.items():
        d = GaussianDiffusion(timesteps=T, prediction=prediction, loss_weighting=weighting)
        torch.testing.assert_close(d.loss_weights.double(), w, rtol=1e-5, atol=0, msg=weighting)
    # min-SNR for ε: 1 (L_simple) wherever SNR <= γ, i.e. at every noisy step
    d = GaussianDiffusion(timesteps=T, loss_weighting="min_snr", min_snr_gamma=5.0)
    noisy = snr <= 5
    assert noisy.sum() > 850 and torch.all(d.loss_weights[noisy] == 1)


def test_simple_eps_loss_is_unchanged_l_simple():
    d = GaussianDiffusion(timesteps=T)
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(5, 1, 6, 6, generator=g), torch.randn(5, 1, 6, 6, generator=g)
    t = torch.tensor([0, 3, 400, 800, 999])
    model = lambda x, tt: 0.3 * x  # noqa: E731
    by_hand = ((0.3 * d.q_sample(x0, t, noise) - noise) ** 2).flatten(1).mean(1)
    assert torch.equal(d.p_losses(model, x0, t, noise, reduction="none"), by_hand)


def test_one_denoiser_in_three_parameterizations_has_one_loss():
    """The same function written as an ε-, x_0- or v-model gets the same min-SNR loss and
    the same ELBO loss: the weighting is one function of t, whatever the network predicts."""
    eps_model = lambda x, tt: torch.tanh(x) * (1 + tt.view(-1, 1, 1, 1) / 1000)  # noqa: E731
    g = torch.Generator().manual_seed(5)
    x0, noise = torch.randn(6, 1, 6, 6, generator=g), torch.randn(6, 1, 6, 6, generator=g)
    t = torch.tensor([1, 50, 300, 600, 850, 999])
    for weighting in ("min_snr", "elbo"):
        losses = {}
        for kind in P.PREDICTIONS:
            d = GaussianDiffusion(timesteps=T, prediction=kind, loss_weighting=weighting)
            a, s = d._a_s(t, x0.shape)

            def model(x, tt, kind=kind, a=a, s=s):
                eps = eps_model(x, tt)
                return {"eps": eps, "x0": P.x0_from("eps", eps, x, a, s),
                        "v": P.v_from("eps", eps, x, a, s)}[kind]
            losses[kind] = d.p_losses(model, x0, t, noise, reduction="none")
        torch.testing.assert_close(losses["x0"], losses["eps"], rtol=2e-3, atol=1e-6)
        torch.testing.assert_close(losses["v"], losses["eps"], rtol=2e-3, atol=1e-6)


def test_unknown_names_fail_with_the_choices():
    with pytest.raises(ValueError, match="'eps', 'x0' or 'v'"):
        GaussianDiffusion(prediction="noise")
    with pytest.raises(ValueError, match="min_snr"):
        GaussianDiffusion(loss_weighting="snr")
    with pytest.raises(ValueError, match="gamma"):
        GaussianDiffusion(loss_weighting="min_snr", min_snr_gamma=0)
    with pytest.raises(ConfigError, match="did you mean 'v'"):
        get_config("tiny", prediction="vv")


def test_saved_runs_know_their_parameterization():
    config = get_config("tiny", prediction="v", loss_weighting="min_snr", min_snr_gamma=3.0)
    back = TrainConfig.from_json(config.to_json())
    d = back.build_diffusion()
    assert (d.prediction, d.loss_weighting, d.min_snr_gamma) == ("v", "min_snr", 3.0)
    old = json.loads(get_config("tiny").to_json())
    for key in ("prediction", "loss_weighting", "min_snr_gamma"):
        del old[key]                                            # a config.json from before
    assert TrainConfig.from_dict(old).build_diffusion().prediction == "eps"
    assert build_diffusion({"timesteps": 10}).prediction == "eps"
    assert build_diffusion({"timesteps": 10, "prediction": "x0"}).prediction == "x0"
