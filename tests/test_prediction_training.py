"""A run trained to predict x_0 or v (with min-SNR weighting) learns, records what it
predicts, and samples with every sampler from the command line."""
import json

import pytest
import torch

from diffusion_tutorial.cli import main
from diffusion_tutorial.config import get_config
from diffusion_tutorial.samplers import SAMPLERS
from diffusion_tutorial.train import load_run, train


def _x0_error(diffusion, model, x0, t=40):
    """Mean squared error of the model's x̂_0 on noisy bars at index t (fixed noise)."""
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        x_t = diffusion.q_sample(x0, t, noise)
        return ((diffusion.predict_x0(model, x_t, t) - x0) ** 2).mean().item()


@pytest.mark.parametrize("prediction, weighting", [("v", "min_snr"), ("x0", "simple")])
def test_a_v_or_x0_model_learns_and_the_run_knows_it(tmp_path, bars, prediction, weighting):
    config = get_config("tiny", run_dir=str(tmp_path / "run"), steps=150, checkpoint_every=0,
                        n_samples=4, sample_steps=4, device="cpu", prediction=prediction,
                        loss_weighting=weighting)
    untrained = config.build_model().eval()
    result = train(config, progress=False, dataset=bars)
    x0 = torch.stack([bars[i][0] for i in range(64)])
    before = _x0_error(result.diffusion, untrained, x0)
    after = _x0_error(result.diffusion, result.ema_model, x0)
    assert after < 0.5 * before, (before, after)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["prediction"], saved["loss_weighting"]) == (prediction, weighting)
    _, model, diffusion = load_run(tmp_path / "run", device="cpu")
    assert diffusion.prediction == prediction
    assert _x0_error(diffusion, model, x0) == pytest.approx(after)


def test_every_sampler_from_the_command_line(tmp_path, bars, capsys):
    config = get_config("tiny", run_dir=str(tmp_path / "run"), steps=10, checkpoint_every=0,
                        n_samples=4, sample_steps=4, device="cpu", prediction="v")
    train(config, progress=False, dataset=bars)
    for sampler in SAMPLERS:
        out = tmp_path / f"{sampler}.png"
        argv = ["sample", "--checkpoint", str(tmp_path / "run"), "--sampler", sampler, "--n", "4",
                "--out", str(out), "--no-progress", "--device", "cpu"]
        if sampler != "ddpm":
            argv += ["--steps", "3"]
        assert main(argv) == 0, capsys.readouterr().err
        assert out.stat().st_size > 0
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--sampler", "heun",
                 "--eta", "1", "--out", str(tmp_path / "x.png")]) == 1
    assert "eta applies to the ddim sampler only" in capsys.readouterr().err
