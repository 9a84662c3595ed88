"""The shared helpers: the timestep check every network and the process use, and the timing loop."""
import time

import pytest
import torch

from diffusion_tutorial.utils import as_timestep_tensor, get_device, median_time, wall_times


def test_int_timestep_is_broadcast_and_tensor_is_kept():
    assert as_timestep_tensor(7, 3).tolist() == [7, 7, 7]
    t = torch.tensor([0.5, 2.0])                       # networks may see non-integer t: kept as is
    assert as_timestep_tensor(t, 2).dtype == torch.float32
    indices = as_timestep_tensor(torch.tensor([0, 9]), 2, num_timesteps=10)
    assert indices.dtype == torch.long and indices.tolist() == [0, 9]


@pytest.mark.parametrize("t, match", [(torch.tensor([1, 2, 3]), r"\(2,\) tensor"),
                                      (-1, "out of range"), (10, "0..9")])
def test_bad_timesteps_name_the_fix(t, match):
    with pytest.raises(ValueError, match=match):
        as_timestep_tensor(t, 2, num_timesteps=10)


def test_device_timesteps_are_range_checked_without_a_host_read(monkeypatch):
    """Off the CPU the range check is queued on the device (torch._assert_async) instead of
    read back; here the tensor only pretends to live off the CPU."""
    asserted = []
    monkeypatch.setattr(torch.Tensor, "is_cpu", property(lambda self: False))
    monkeypatch.setattr(torch, "_assert_async", lambda cond, msg: asserted.append((bool(cond), msg)))
    as_timestep_tensor(torch.tensor([0, 9]), 2, num_timesteps=10)
    as_timestep_tensor(torch.tensor([0, 10]), 2, num_timesteps=10)
    assert [ok for ok, _ in asserted] == [True, False] and "0..9" in asserted[1][1]


def test_wall_times_runs_warmup_untimed_and_times_each_call():
    calls = []

    def fn():
        calls.append(time.perf_counter())
        time.sleep(0.02)

    times = wall_times(fn, repeats=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3
    assert all(t >= 0.02 for t in times)               # a sleep never returns early
    assert median_time(fn, repeats=1, warmup=0) >= 0.02
    with pytest.raises(ValueError, match="repeats"):
        wall_times(fn, repeats=0)


def test_get_device_names_an_unknown_or_missing_device():
    assert get_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu': use auto, cpu, cuda"):
        get_device("gpu")
    count = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"'cuda:{count}' is not available here .*--device auto"):
        get_device(f"cuda:{count}")                 # one past the last GPU (cuda:0 on a CPU machine)
