"""The shared helpers: the timestep check every network and the process use, and the timing loop."""
import time

import pytest
import torch

from diffusion_tutorial.utils import as_timestep_tensor, median_time, wall_times


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
