"""The GPU path, exercised on the CPU: precision per device, GradScaler, foreach EMA, batches
gathered on the device, no host reads in a step, torch.compile and its fallback, the flags."""
import functools
import json
import os
import sys
from contextlib import contextmanager

import pytest
import torch

from conftest import TinyEps
from diffusion_tutorial import precision
from diffusion_tutorial.batches import DeviceBatches, StepBatchSampler
from diffusion_tutorial.checkpoint import load_checkpoint
from diffusion_tutorial.cli import main
from diffusion_tutorial.config import ConfigError, TrainConfig, get_config
from diffusion_tutorial.data import get_dataset
from diffusion_tutorial.distributed import DistInfo
from diffusion_tutorial.ema import EMA
from diffusion_tutorial.train import build, compile_network, restore, step_batches, train, train_step

PACKAGE = os.path.dirname(sys.modules["diffusion_tutorial"].__file__)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- precision
@pytest.mark.parametrize("capability, expected", [
    ((7, 0), torch.float16),    # V100: no native bf16
    ((7, 5), torch.float16),    # T4 (Colab's free GPU)
    ((8, 0), torch.bfloat16),   # A100
    ((8, 9), torch.bfloat16),   # L4
    ((9, 0), torch.bfloat16),   # H100 / H200
])
def test_auto_precision_follows_the_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda")
    assert precision.autocast_dtype(cuda, "auto") is expected
    assert precision.autocast_dtype(cuda, "no") is None
    assert precision.autocast_dtype(cuda, "bf16") is torch.bfloat16     # asked for: given
    assert precision.autocast_dtype(cuda, "fp16") is torch.float16


def test_cpu_and_mps_train_in_fp32_unless_asked(monkeypatch):
    def no_gpu(device=None):
        raise AssertionError("a CPU or MPS device must not ask for a CUDA capability")
    monkeypatch.setattr(torch.cuda, "get_device_capability", no_gpu)
    for device in ("cpu", "mps"):
        assert precision.autocast_dtype(device, "auto") is None
        assert precision.autocast_dtype(device, "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        precision.autocast_dtype("cpu", "fp8")


def test_auto_options_are_on_for_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert precision.use_compile(None, cuda) and not precision.use_compile(None, cpu)
    assert precision.use_compile(True, cpu) and not precision.use_compile(False, cuda)
    assert precision.use_channels_last(None, cuda) and not precision.use_channels_last(None, cpu)
    assert precision.use_channels_last(True, cpu)
    assert precision.adamw_options(cuda) == {"fused": True} and precision.adamw_options(cpu) == {}
    assert precision.grad_scaler(cpu, torch.float16).is_enabled()
    assert not precision.grad_scaler(cpu, torch.bfloat16).is_enabled()
    assert not precision.grad_scaler(cpu, None).is_enabled()


def test_fp16_with_a_grad_scaler_learns_and_resumes_exactly_on_cpu(tmp_path, tiny_config, bars):
    """fp16 autocast + GradScaler on the CPU: the loss falls, the scale is checkpointed, and
    an interrupted run resumes to the uninterrupted run's weights."""
    tiny_config.mixed_precision, tiny_config.steps = "fp16", 40
    tiny_config.run_dir = str(tmp_path / "straight")
    straight = train(tiny_config, progress=False, dataset=bars)
    assert sum(straight.losses[-10:]) < 0.8 * sum(straight.losses[:10])
    state = load_checkpoint(tiny_config.run_dir).state
    assert state["scaler"]["scale"] > 1          # loss scaling was on (initial scale 2^16)
    split = TrainConfig(**{**tiny_config.to_dict(), "run_dir": str(tmp_path / "split"), "steps": 10})
    train(split, progress=False, dataset=bars)
    split.steps = 40
    resumed = train(split, resume=True, progress=False, dataset=bars)
    assert _same(_weights(straight.model), _weights(resumed.model))


def test_the_cuda_settings_run_on_cpu_and_resume_across_devices(tmp_path, tiny_config, bars,
                                                              monkeypatch):
    """What CUDA gets (fused AdamW, channels_last, fp16 + GradScaler), run on the CPU where
    torch has these kernels: the loss falls, and its checkpoint resumes in a plain fp32
    foreach run (a run moved from a GPU to a CPU) with the CPU's optimizer kernels."""
    monkeypatch.setattr(precision, "adamw_options", lambda device: {"fused": True})
    tiny_config.mixed_precision, tiny_config.channels_last, tiny_config.steps = "fp16", True, 40
    result = train(tiny_config, progress=False, dataset=bars)
    assert sum(result.losses[-10:]) < 0.8 * sum(result.losses[:10])
    conv = next(m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    monkeypatch.undo()
    tiny_config.mixed_precision, tiny_config.channels_last, tiny_config.steps = "no", None, 46
    resumed = train(tiny_config, resume=True, progress=False, dataset=bars)
    assert resumed.steps_done == 6 and len(resumed.losses) == 46
    state = load_checkpoint(tiny_config.run_dir).state
    assert not state["optimizer"]["param_groups"][0]["fused"] and "scaler" not in state


def test_sampling_runs_under_the_training_autocast(tiny_config, bars, monkeypatch):
    """sample_images calls the network inside the autocast the config picks for its device."""
    result = train(tiny_config, progress=False, dataset=bars)
    seen = []
    forward = type(result.ema_model).forward

    def spy(self, x, t, y=None):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return forward(self, x, t, y)
    monkeypatch.setattr(type(result.ema_model), "forward", spy)
    from diffusion_tutorial.runs import sample_images
    for mode, dtype in (("bf16", torch.bfloat16), ("no", None)):
        seen.clear()
        tiny_config.mixed_precision = mode
        x = sample_images(result.ema_model, result.diffusion, tiny_config, 2, steps=3)
        assert seen and set(seen) == {dtype} and x.dtype == torch.float32


# ---------------------------------------------------------------------- EMA
def test_foreach_ema_equals_the_per_parameter_update():
    torch.manual_seed(0)
    model = TinyEps()
    ema = EMA(model, decay=0.99, warmup=True)
    reference = [p.detach().clone() for p in model.parameters()]
    for n in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        d = min(0.99, (1 + n) / (10 + n))
        for r, p in zip(reference, model.parameters()):
            r.lerp_(p.detach(), 1 - d)                     # θ_EMA ← d θ_EMA + (1 − d) θ
        ema.update(model)
        for r, e in zip(reference, ema.model.parameters()):
            assert torch.equal(r, e)


# ---------------------------------------------------------------------- data on the device
def test_device_batches_equal_the_dataloader_batches_across_epochs_and_ranks():
    ds = get_dataset("mnist-sample")
    n, b = len(ds), 500                                     # 9 steps per epoch: cross two
    for rank, world in ((0, 1), (1, 2)):
        args = (b, 3, 5, 21, rank, world)
        fast = list(DeviceBatches(ds, "cpu", *args))
        slow = list(torch.utils.data.DataLoader(ds, batch_sampler=StepBatchSampler(n, *args)))
        assert len(fast) == len(slow) == 16
        for (x1, y1), (x2, y2) in zip(fast, slow):
            assert x1.dtype == x2.dtype == torch.float32 and x1.shape == (b, 1, 28, 28)
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_device_path_trains_exactly_as_the_dataloader_path_and_resumes_exactly(tmp_path, tiny_config):
    """mnist-sample (an ImageDataset: gathered on the device) against the same digits through
    a DataLoader (a Subset hides the ImageDataset), and a split, resumed device-path run."""
    ds = get_dataset("mnist-sample")
    tiny_config.run_dir = str(tmp_path / "device")
    fast = train(tiny_config, progress=False)
    tiny_config.run_dir = str(tmp_path / "loader")
    slow = train(tiny_config, progress=False, dataset=torch.utils.data.Subset(ds, range(len(ds))))
    assert fast.losses == slow.losses and _same(_weights(fast.model), _weights(slow.model))
    tiny_config.run_dir, steps = str(tmp_path / "split"), tiny_config.steps
    tiny_config.steps = 5
    train(tiny_config, progress=False)
    tiny_config.steps = steps
    resumed = train(tiny_config, resume=True, progress=False)
    assert resumed.losses == fast.losses and _same(_weights(fast.ema_model), _weights(resumed.ema_model))


# ---------------------------------------------------------------------- no host sync
@contextmanager
def host_reads():
    """Records (file, function) for every read of a tensor's value into Python."""
    calls = []
    names = ("item", "tolist", "__float__", "__int__", "__bool__", "numpy")
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def spy(name):
        original = saved[name]

        def wrapper(self, *args, **kwargs):
            frame = sys._getframe(1)
            calls.append((frame.f_code.co_filename, frame.f_code.co_name, name))
            return original(self, *args, **kwargs)
        return wrapper
    for name in names:
        setattr(torch.Tensor, name, spy(name))
    try:
        yield calls
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


def test_a_training_step_reads_nothing_back_from_the_device(tiny_config):
    """Five steps of the trainer (batch gathering, label dropout, loss, backward, clipping,
    AdamW, schedule, EMA) read no tensor value into Python; the only reads inside the
    package are the timestep range checks of GaussianDiffusion (p_losses' own validation),
    which read back on a CPU only: on a GPU they are asserted on the device (utils)."""
    tiny_config.class_conditional = True
    run = build(tiny_config, None, DistInfo(device=torch.device("cpu")))
    restore(run, None, False, False)
    compile_network(run)
    batches = iter(step_batches(run, get_dataset("mnist-sample")))
    train_step(run, *next(batches))                      # warm-up: lazy state is made here
    with host_reads() as calls:
        for _ in range(5):
            train_step(run, *next(batches))
    ours = [c for c in calls if c[0].startswith(PACKAGE)]
    trainer = [c for c in ours if "timestep" not in c[1]]
    assert trainer == [], trainer
    assert len(run.pending) == 6 and run.losses == []    # the losses wait on the device


def test_losses_are_read_once_per_log_interval(tiny_config, bars):
    tiny_config.steps, tiny_config.log_every, tiny_config.checkpoint_every = 12, 4, 0
    with host_reads() as calls:
        train(tiny_config, progress=False, dataset=bars)
    reads = [c for c in calls if c[1] == "read_losses"]
    assert len(reads) == 3, reads                        # steps 4, 8, 12: one transfer each
    lines = (tmp := tiny_config.run_dir) and open(os.path.join(tmp, "loss_log.jsonl")).read()
    assert [json.loads(l)["step"] for l in lines.splitlines()] == list(range(1, 13))


# ---------------------------------------------------------------------- torch.compile
def test_compile_that_raises_falls_back_with_one_line(tmp_path, tiny_config, bars, monkeypatch, capsys):
    tiny_config.run_dir = str(tmp_path / "eager")
    eager = train(tiny_config, progress=False, dataset=bars)

    def broken(*args, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python\nsecond line")
    monkeypatch.setattr(torch, "compile", broken)
    tiny_config.run_dir, tiny_config.compile = str(tmp_path / "fallback"), True
    capsys.readouterr()
    result = train(tiny_config, progress=False, dataset=bars)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch.compile failed" in err[0] and "Dynamo is not supported" in err[0]
    assert "--no-compile" in err[0]
    assert _same(_weights(eager.model), _weights(result.model))


def test_compile_that_fails_at_the_first_step_reruns_it_eagerly(tmp_path, tiny_config, bars,
                                                                monkeypatch, capsys):
    """Compilation happens at the first call: a failure there is caught, the step is redone
    eagerly with the same random draws, so the run equals an eager one."""
    tiny_config.class_conditional = True                 # label dropout draws random numbers too
    tiny_config.run_dir = str(tmp_path / "eager")
    eager = train(tiny_config, progress=False, dataset=bars)

    def lazy_failure(model, **kwargs):
        def compiled(*args, **kw):
            torch.rand(3)                                # a failed attempt may consume RNG
            raise RuntimeError("inductor: no C++ compiler found")
        return compiled
    monkeypatch.setattr(torch, "compile", lazy_failure)
    tiny_config.run_dir, tiny_config.compile = str(tmp_path / "fallback"), True
    capsys.readouterr()
    result = train(tiny_config, progress=False, dataset=bars)
    assert "torch.compile failed (RuntimeError: inductor: no C++ compiler found)" in capsys.readouterr().err
    assert _same(_weights(eager.model), _weights(result.model)) and eager.losses == result.losses


@pytest.mark.slow
def test_compiled_network_trains_like_the_eager_one(tmp_path, tiny_config, bars, monkeypatch):
    """torch.compile really wraps the network (dynamo with its eager backend, so no C++
    toolchain is needed on a CPU) and gives the eager run's losses."""
    tiny_config.steps, tiny_config.run_dir = 6, str(tmp_path / "eager")
    eager = train(tiny_config, progress=False, dataset=bars)
    calls = []
    real = torch.compile

    def compile_eager(model, **kwargs):
        calls.append(kwargs)
        return real(model, backend="eager")
    monkeypatch.setattr(torch, "compile", compile_eager)
    tiny_config.run_dir, tiny_config.compile = str(tmp_path / "compiled"), True
    tiny_config.compile_mode = "reduce-overhead"         # also marks each CUDA-graph step
    compiled = train(tiny_config, progress=False, dataset=bars)
    assert calls == [{"mode": "reduce-overhead"}]
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-5)


# ---------------------------------------------------------------------- flags and configs
def test_flags_reach_the_config(capsys):
    argv = ["train", "--preset", "tiny", "--summary", "--compile", "--compile-mode", "reduce-overhead",
            "--mixed-precision", "fp16", "--no-channels-last"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for line in ("compile                True", "compile_mode           'reduce-overhead'",
                 "mixed_precision        'fp16'", "channels_last          False"):
        assert line in out, line
    assert main(["train", "--preset", "tiny", "--summary", "--no-compile", "--channels-last"]) == 0
    out = capsys.readouterr().out
    assert "compile                False" in out and "channels_last          True" in out
    assert main(["train", "--preset", "tiny", "--summary"]) == 0
    assert "compile                None" in capsys.readouterr().out      # auto


def test_a_bad_precision_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "tiny", "--mixed-precision", "fp8"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid choice: 'fp8'" in err and "fp16" in err


def test_old_configs_still_load():
    for old in ("auto", "bf16", "no"):
        d = {**get_config("tiny").to_dict(), "mixed_precision": old, "channels_last": False}
        del d["compile"], d["compile_mode"]                  # fields older configs lack
        config = TrainConfig.from_dict(d).validate()
        assert config.mixed_precision == old and config.compile is None
    with pytest.raises(ConfigError, match="did you mean 'reduce-overhead'"):
        get_config("tiny", compile_mode="reduce_overhead")
    assert functools.reduce(lambda a, k: a and k in TrainConfig.RESUMABLE_CHANGES,
                            ("mixed_precision", "compile", "compile_mode", "channels_last"), True)
