"""Plotting helpers run on tiny inputs under the Agg backend."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.animation import FuncAnimation  # noqa: E402
from PIL import Image  # noqa: E402

from diffusion_tutorial import GaussianDiffusion, ddpm_sample  # noqa: E402
from diffusion_tutorial.plotting import (animate_points, animate_trajectory, image_grid,  # noqa: E402
                                         moving_average, plot_forward_strip, plot_loss, plot_points,
                                         plot_schedules, plot_trajectory, save_grid, show_images)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def images(b=5, c=1, size=6, seed=0):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_image_grid_layout_and_range():
    x = images(5)
    x[0] = -1.0
    x[4] = 1.0
    grid = image_grid(x, nrow=3, padding=1)
    assert grid.shape == (2 * 7 + 1, 3 * 7 + 1, 1)                 # 2 rows of 3, 1-pixel padding
    assert grid[1:7, 1:7].max() == 0.0                              # image 0 is black (-1 -> 0)
    assert np.all(grid[8:14, 8:14] == 1.0)                          # image 4 (row 1, col 1) is white
    assert np.allclose(grid[1:7, 8:14, 0], ((x[1, 0] + 1) / 2).numpy())
    assert image_grid(images(2, c=3), nrow=8).shape == (10, 18, 3)


def test_show_images_and_save_grid(tmp_path):
    fig = show_images(images(4), nrow=2, title="digits")
    assert len(fig.axes) == 1 and len(fig.axes[0].images) == 1
    path = save_grid(images(6, c=3), tmp_path / "out" / "grid.png", nrow=3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (3 * 8 + 2, 2 * 8 + 2) and im.mode == "RGB"
    fig, ax = plt.subplots(1, 2)
    assert show_images(images(2), ax=ax[1]) is fig


def test_forward_strip_has_one_axis_per_image_and_step():
    diffusion = GaussianDiffusion(timesteps=100)
    fig = plot_forward_strip(diffusion, images(3), ts=[0, 49, 99], generator=torch.Generator().manual_seed(0))
    assert len(fig.axes) == 9 and all(len(ax.images) == 1 for ax in fig.axes)
    assert fig.axes[0].get_title().startswith("t=1") and fig.axes[2].get_title().startswith("t=100")


def test_plot_trajectory_images_and_points():
    diffusion = GaussianDiffusion(timesteps=20)
    model = lambda x, t: torch.zeros_like(x)
    _, traj = ddpm_sample(diffusion, model, (2, 1, 6, 6), return_trajectory=True, progress=False,
                          generator=torch.Generator().manual_seed(0))
    fig = plot_trajectory(traj, n_frames=5)
    assert len(fig.axes) == 10
    assert sum(len(ax.images) for ax in fig.axes) == 9          # x_T has no x̂_0 yet
    _, traj2 = ddpm_sample(diffusion, model, (30, 2), return_trajectory=True, trajectory_keep=3, progress=False)
    fig2 = plot_trajectory(traj2, n_frames=4)
    assert len(fig2.axes) == 8 and sum(len(ax.collections) for ax in fig2.axes) == 7


def test_plot_loss_smooths_and_saves(tmp_path):
    losses = 1 + np.random.default_rng(0).random(200)
    fig = plot_loss(losses, smooth=10, path=tmp_path / "loss.png")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_yscale() == "log"
    assert np.allclose(ax.lines[1].get_ydata()[9:], np.convolve(losses, np.ones(10) / 10, mode="valid"))
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert np.allclose(moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])


def test_plot_schedules_and_points():
    fig = plot_schedules({"linear": GaussianDiffusion(timesteps=50),
                          "cosine": GaussianDiffusion(schedule="cosine", timesteps=50)})
    assert len(fig.axes) == 2 and all(len(ax.lines) == 2 for ax in fig.axes)
    abar = GaussianDiffusion(timesteps=50).alphas_cumprod.double().numpy()
    assert np.allclose(fig.axes[1].lines[0].get_ydata(), np.log(abar / (1 - abar)))
    fig = plot_points(torch.randn(50, 2), title="points")
    assert len(fig.axes[0].collections) == 1
    with pytest.raises(ValueError, match="N, 2"):
        plot_points(torch.randn(5, 3))


def test_animations_render_to_jshtml():
    frames = [images(4, seed=i) for i in range(3)]
    anim = animate_trajectory(frames, titles=["a", "b", "c"], nrow=2)
    assert isinstance(anim, FuncAnimation)
    html = anim.to_jshtml()
    assert "<input" in html and html.count("data:image/png") == 3   # one frame each, with a slider
    anim2 = animate_points([torch.randn(20, 2) for _ in range(2)])
    assert isinstance(anim2, FuncAnimation) and "data:image/png" in anim2.to_jshtml()
    with pytest.raises(ValueError, match="titles"):
        animate_trajectory(frames, titles=["a"])


def test_save_grid_never_leaves_half_a_png(tmp_path, monkeypatch):
    """A write cut short (Ctrl-C, a full disk) keeps the earlier grid whole and leaves no
    temporary file."""
    path = save_grid(torch.zeros(4, 1, 8, 8), tmp_path / "grid.png")
    before = path.read_bytes()

    def cut_short(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):
        save_grid(torch.ones(4, 1, 8, 8), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]
