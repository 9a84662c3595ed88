"""Shared fixtures: a tiny synthetic image set and a tiny stand-in ε-network."""
import os
import subprocess

import pytest
import torch
from torch import nn

torch.set_num_threads(1)  # small models: one thread is faster than two on a busy 2-core CPU


class TinyEps(nn.Module):
    """A two-layer conv ε-network with a learned time embedding (a stand-in for the UNet)."""

    def __init__(self, channels: int = 1, hidden: int = 16, timesteps: int = 100):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, hidden, 3, padding=1)
        self.time = nn.Embedding(timesteps, hidden)
        self.conv_out = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x, t, y=None):
        h = torch.nn.functional.silu(self.conv_in(x) + self.time(t)[:, :, None, None])
        return self.conv_out(h)


def bars_dataset(n: int = 256, size: int = 8, seed: int = 0):
    """n images (1, size, size) in [-1, 1]: a bright horizontal (label 0) or vertical
    (label 1) bar at a random position on a dark background."""
    g = torch.Generator().manual_seed(seed)
    x = -torch.ones(n, 1, size, size)
    labels = torch.randint(0, 2, (n,), generator=g)
    pos = torch.randint(0, size, (n,), generator=g)
    for i in range(n):
        if labels[i] == 0:
            x[i, 0, pos[i], :] = 1.0
        else:
            x[i, 0, :, pos[i]] = 1.0
    return torch.utils.data.TensorDataset(x, labels)


@pytest.fixture(scope="session")
def bars():
    return bars_dataset()


@pytest.fixture
def tiny_config(tmp_path):
    from diffusion_tutorial.config import get_config
    return get_config("tiny", run_dir=str(tmp_path / "run"), steps=12, checkpoint_every=6,
                      n_samples=4, sample_steps=4, device="cpu")


@pytest.fixture
def cli_env():
    """Environment for subprocesses: one thread each, no network, no debug tracebacks."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    env.pop("DIFFUSION_TUTORIAL_DEBUG", None)
    env.pop("WORLD_SIZE", None)
    return env


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process truly cannot create files in. chmod does not stop root, so root
    gets an immutable folder (chattr +i); if neither works here the test is skipped."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if getattr(os, "geteuid", lambda: 1)() != 0:
        os.chmod(folder, 0o555)
        undo = ["chmod", "755", str(folder)]
    else:
        try:
            made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        except OSError:
            made = False
        if not made:
            pytest.skip("root, and chattr +i is not available: no read-only folder can be made")
        undo = ["chattr", "-i", str(folder)]
    try:
        (folder / "probe").write_bytes(b"")
        writable = True
    except OSError:
        writable = False
    try:
        if writable:
            pytest.skip("this file system lets the folder be written")
        yield folder
    finally:
        subprocess.run(undo, capture_output=True)
