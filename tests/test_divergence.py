"""Divergence and finished runs (issue 13, items 3 and 8): what the messages say, that
non-finite weights are never saved, and that a diverged checkpoint cannot be sampled."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TinyEps
from diffusion_tutorial.checkpoint import CheckpointError, has_checkpoint, load_checkpoint
from diffusion_tutorial.cli import main
from diffusion_tutorial.runs import load_run
from diffusion_tutorial.train import TrainingDiverged, train
from test_train import NaNAfter


class InfGradientAt(TinyEps):
    """The loss stays finite, but at forward call ``at`` the gradient becomes inf, so AdamW
    writes NaN into the weights (inf / sqrt(inf))."""

    def __init__(self, at):
        super().__init__(timesteps=100)
        self.calls, self.at = 0, at

    def forward(self, x, t, y=None):
        self.calls += 1
        out = super().forward(x, t, y)
        if self.calls == self.at:
            out.register_hook(lambda g: g * float("inf"))
        return out


def test_nan_before_any_checkpoint_says_none_exists(tiny_config, bars):
    tiny_config.checkpoint_every = 0                         # only at the end
    with pytest.raises(TrainingDiverged) as info:
        train(tiny_config, progress=False, dataset=bars, model=NaNAfter(after=3))
    msg = str(info.value)
    assert "at step 4" in msg and "no checkpoint of this run exists yet" in msg
    assert "was kept" not in msg and not has_checkpoint(tiny_config.run_dir)


def test_the_hint_names_grad_clip_only_when_it_is_off(tiny_config, bars):
    for clip, hinted in ((1.0, False), (0.0, True)):
        tiny_config.grad_clip = clip
        with pytest.raises(TrainingDiverged) as info:
            train(tiny_config, progress=False, dataset=bars, model=NaNAfter(after=7), overwrite=True)
        assert ("set grad_clip" in str(info.value)) is hinted, str(info.value)
        assert "lower the learning rate" in str(info.value)


def test_nonfinite_weights_are_never_saved(tiny_config, bars):
    """Step 12's loss is finite but its update makes the weights NaN: the final checkpoint is
    refused and the one of step 6 stays, finite."""
    tiny_config.grad_clip = 0.0
    with pytest.raises(TrainingDiverged, match=r"weights became NaN or infinite by step 12.*step 6"):
        train(tiny_config, progress=False, dataset=bars, model=InfGradientAt(at=12))
    ckpt = load_checkpoint(tiny_config.run_dir)
    assert ckpt.state["step"] == 6
    assert all(torch.isfinite(v).all() for v in [*ckpt.model_state.values(), *ckpt.ema_state.values()])


def test_load_run_and_sample_refuse_nonfinite_weights(tiny_config, bars, tmp_path, capsys):
    train(tiny_config, progress=False, dataset=bars)
    ema_file = tmp_path / "run" / "checkpoint" / "ema.safetensors"
    weights = load_file(str(ema_file))
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(ema_file))
    with pytest.raises(CheckpointError, match="NaN or infinite weights"):
        load_run(tiny_config.run_dir, device="cpu")
    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", tiny_config.run_dir, "--n", "2", "--steps", "2",
                 "--out", str(grid), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "diverged" in err and "--lr" in err
    assert not grid.exists()


def test_resuming_a_finished_run_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = ["train", "--preset", "tiny", "--device", "cpu", "--steps", "4", "--out", str(run)]
    assert main(tiny + ["--no-progress"]) == 0
    grid_time = (run / "samples.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "has already finished: 4 steps done" in out and "larger --steps" in out
    assert "nan" not in out
    assert (run / "samples.png").stat().st_mtime_ns == grid_time       # left as it was
