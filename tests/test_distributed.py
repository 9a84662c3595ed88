"""Data-parallel training: two gloo processes on the CPU via torchrun."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from diffusion_tutorial.checkpoint import load_checkpoint
from diffusion_tutorial.distributed import DistInfo, all_reduce_mean, init_distributed, wrap_model


def test_single_process_is_a_no_op(monkeypatch):
    import torch
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(device=torch.device("cpu")) and info.is_main and not info.enabled
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, info) is model
    assert torch.equal(all_reduce_mean(torch.ones(2), info), torch.ones(2))


def _torchrun():
    exe = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_two_gloo_processes_train_and_resume(tmp_path, cli_env):
    run = tmp_path / "run"
    base = _torchrun() + ["--nproc_per_node=2", "--standalone", "-m", "diffusion_tutorial", "train",
                          "--preset", "tiny", "--no-progress", "--device", "cpu", "--out", str(run),
                          "--checkpoint-every", "20"]
    env = dict(cli_env, DIFFUSION_TUTORIAL_DEBUG="1")
    proc = subprocess.run(base + ["--steps", "40"], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # rank 0 alone wrote: one checkpoint folder, one log line per step
    assert [p.name for p in run.iterdir() if p.name.startswith("checkpoint")] == ["checkpoint"]
    losses = [json.loads(l)["loss"] for l in (run / "loss_log.jsonl").read_text().splitlines()]
    assert len(losses) == 40
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10
    assert load_checkpoint(run).state["step"] == 40
    proc = subprocess.run(base + ["--steps", "50", "--resume"], env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = [json.loads(l)["step"] for l in (run / "loss_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 51)) and load_checkpoint(run).state["step"] == 50
