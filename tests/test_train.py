"""The training loop: loss falls, exact resume, Ctrl-C, NaN, EMA, data order, CFG dropout."""
import json
import os
import signal

import pytest
import torch

from conftest import TinyEps
from diffusion_tutorial.checkpoint import load_checkpoint
from diffusion_tutorial.config import ConfigError, get_config
from diffusion_tutorial.ema import EMA
from diffusion_tutorial.train import (TrainingDiverged, TrainingInterrupted, batch_indices,
                                      load_run, train, warmup_lambda)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_loss_falls_on_tiny_data(tiny_config, bars):
    tiny_config.steps = 60
    result = train(tiny_config, progress=False, dataset=bars)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert len(result.losses) == 60
    assert last < 0.6 * first, (first, last)
    run = result.run_dir
    for name in ("samples.png", "loss.png", "loss_log.jsonl", "config.json", "checkpoint"):
        assert (run / name).exists(), name
    lines = [json.loads(l) for l in (run / "loss_log.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(1, 61))
    assert {"step", "loss", "lr", "time"} <= set(lines[0])
    assert result.steps_per_sec > 0


def test_resume_gives_exactly_the_uninterrupted_weights(tmp_path, tiny_config, bars):
    tiny_config.run_dir = str(tmp_path / "straight")
    straight = train(tiny_config, progress=False, dataset=bars)

    first = tiny_config.__class__(**{**tiny_config.to_dict(), "run_dir": str(tmp_path / "split"),
                                     "steps": 5})
    train(first, progress=False, dataset=bars)              # stops (and saves) at step 5
    first.steps = tiny_config.steps
    resumed = train(first, resume=True, progress=False, dataset=bars)
    for a, b in ((straight.model, resumed.model), (straight.ema_model, resumed.ema_model)):
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k
    assert resumed.losses == straight.losses
    assert load_checkpoint(tmp_path / "split").state["step"] == tiny_config.steps


class InterruptAt(TinyEps):
    """Sends this process SIGINT (Ctrl-C) during forward call number ``at``."""

    def __init__(self, at):
        super().__init__(timesteps=100)
        self.calls, self.at = 0, at

    def forward(self, x, t, y=None):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().forward(x, t, y)


def test_ctrl_c_saves_then_stops_and_resume_matches(tmp_path, tiny_config, bars):
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup
    tiny_config.run_dir = str(tmp_path / "straight")
    torch.manual_seed(0)
    straight = train(tiny_config, progress=False, dataset=bars, model=InterruptAt(at=-1))
    tiny_config.run_dir = str(tmp_path / "ctrl_c")
    torch.manual_seed(0)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 4"):
        train(tiny_config, progress=False, dataset=bars, model=InterruptAt(at=4))
    assert load_checkpoint(tiny_config.run_dir).state["step"] == 4
    assert signal.getsignal(signal.SIGINT) is before   # the caller's handler is restored
    torch.manual_seed(0)
    resumed = train(tiny_config, resume=True, progress=False, dataset=bars, model=InterruptAt(at=-1))
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


class NaNAfter(TinyEps):
    def __init__(self, after):
        super().__init__(timesteps=100)
        self.calls, self.after = 0, after

    def forward(self, x, t, y=None):
        self.calls += 1
        out = super().forward(x, t, y)
        return out * float("nan") if self.calls > self.after else out


def test_nan_loss_stops_names_the_step_and_keeps_checkpoint(tiny_config, bars):
    with pytest.raises(TrainingDiverged, match="at step 8.*step 6"):
        train(tiny_config, progress=False, dataset=bars, model=NaNAfter(after=7))
    ckpt = load_checkpoint(tiny_config.run_dir)
    assert ckpt.state["step"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt.model_state.values())


def test_label_dropout_rate_for_guidance(tiny_config, bars):
    seen = []

    class Recorder(TinyEps):
        def forward(self, x, t, y=None):
            seen.append(y.clone())
            return super().forward(x, t)

    tiny_config.class_conditional, tiny_config.p_uncond, tiny_config.steps = True, 0.5, 20
    tiny_config.checkpoint_every, tiny_config.n_samples = 0, 2
    train(tiny_config, progress=False, dataset=bars, model=Recorder(timesteps=100))
    labels = torch.cat(seen[:20])                   # the 20 training calls (then sampling)
    null = (labels == 10).float().mean().item()     # 10 classes: index 10 is the null class
    assert 0.4 < null < 0.6
    assert set(labels[labels != 10].tolist()) <= {0, 1}


def test_batch_order_is_a_permutation_per_epoch_and_ranks_are_disjoint():
    n, b = 20, 4
    epoch = [i for step in range(5) for i in batch_indices(n, b, step, seed=3)]
    assert sorted(epoch) == list(range(n))
    assert batch_indices(n, b, 7, seed=3) == batch_indices(n, b, 7, seed=3)
    assert batch_indices(n, b, 0, seed=3) != batch_indices(n, b, 0, seed=4)
    r0 = batch_indices(n, 2, 1, seed=3, rank=0, world_size=2)
    r1 = batch_indices(n, 2, 1, seed=3, rank=1, world_size=2)
    assert not set(r0) & set(r1) and r0 + r1 == batch_indices(n, 4, 1, seed=3)


def test_warmup_is_linear():
    f = warmup_lambda(4)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_lambda(0)(0) == 1.0


def test_cosine_schedule_follows_its_formula():
    """After warm-up, ½(1 + cos(π p)): 1 at the start, ½ half-way, 0 at the last step."""
    f = warmup_lambda(2, 10, "cosine")
    assert [f(s) for s in (0, 1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)
    assert all(f(s) > f(s + 1) for s in range(2, 10))
    assert f(50) == pytest.approx(0.0)
    assert warmup_lambda(2, 10)(9) == 1.0  # the default stays constant
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        get_config("tiny", lr_schedule="cosin")


def test_ema_matches_closed_form():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.9, warmup=False)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(5):
        ema.update(model)
    # after n updates toward a constant θ: θ_EMA = d^n θ_0 + (1 − d^n) θ
    expected = 0.9 ** 5 * start + (1 - 0.9 ** 5) * torch.ones(2, 2)
    assert torch.allclose(ema.model.weight, expected, atol=1e-6)
    assert EMA(model, 0.999, warmup=True).current_decay() == pytest.approx(0.1)
    other = torch.nn.Linear(2, 2)
    ema.copy_to(other)
    assert torch.equal(other.weight, ema.model.weight)
    fresh = EMA(torch.nn.Linear(2, 2), 0.5)
    fresh.load_state_dict(ema.state_dict())
    assert fresh.num_updates == 5 and torch.equal(fresh.model.weight, ema.model.weight)


def test_load_run_returns_the_ema_model(tiny_config, bars):
    result = train(tiny_config, progress=False, dataset=bars)
    config, model, diffusion = load_run(result.run_dir, device="cpu")
    assert config == tiny_config and diffusion.num_timesteps == tiny_config.timesteps
    for k, v in result.ema_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])
    assert not model.training
