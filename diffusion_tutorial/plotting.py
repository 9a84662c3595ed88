"""Figures for the book: image grids, forward strips, trajectories, curves, animations.

Every function returns the matplotlib Figure (or draws into a given ``ax``) and, when
``path`` is given, also saves a PNG there. Images in the model's range [−1, 1] are shown
through :func:`~diffusion_tutorial.data.from_model_range`, never rescaled by hand.

In a notebook, end a call with ``;`` (or assign the figure) so the figure is not shown
twice. Animations: ``HTML(animate_trajectory(...).to_jshtml())`` gives a player with a
scrubber that keeps working in the static HTML book.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import matplotlib


def _choose_backend() -> None:
    """Fall back to the non-interactive Agg backend on a headless machine, unless a
    backend was already chosen (MPLBACKEND, pyplot imported, a notebook kernel)."""
    if os.environ.get("MPLBACKEND") or "matplotlib.pyplot" in sys.modules or "ipykernel" in sys.modules:
        return
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and headless:
        matplotlib.use("Agg")


_choose_backend()

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import animation  # noqa: E402
from PIL import Image  # noqa: E402

from .data import from_model_range  # noqa: E402


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _save(fig, path) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")


def _new_ax(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


# ---------------------------------------------------------------------- images
def image_grid(x, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images (B, C, H, W) (or one (C, H, W)) in [−1, 1] into one array (H', W', C)
    in [0, 1], ``nrow`` images per row, separated by ``padding`` pixels of ``pad_value``."""
    x = _numpy(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W) or (C, H, W), got shape {x.shape}.")
    if nrow <= 0:
        raise ValueError(f"nrow must be positive, got {nrow}.")
    x = from_model_range(x)
    B, C, H, W = x.shape
    ncol = min(nrow, B)
    nrows = -(-B // ncol)
    grid = np.full((nrows * (H + padding) + padding, ncol * (W + padding) + padding, C), pad_value,
                   dtype=np.float32)
    for i in range(B):
        r, c = divmod(i, ncol)
        top, left = padding + r * (H + padding), padding + c * (W + padding)
        grid[top:top + H, left:left + W] = x[i].transpose(1, 2, 0)  # (H, W, C)
    return grid


def _imshow(ax, grid: np.ndarray) -> None:
    if grid.shape[-1] == 1:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()


def show_images(x, nrow: int = 8, title: Optional[str] = None, ax=None, path=None):
    """Show a batch of [−1, 1] images as one grid; returns the Figure."""
    grid = image_grid(x, nrow)
    fig, ax = _new_ax(ax, (min(12, 0.9 * grid.shape[1] / 30 + 1), min(12, 0.9 * grid.shape[0] / 30 + 1)))
    _imshow(ax, grid)
    if title:
        ax.set_title(title)
    _save(fig, path)
    return fig


def save_grid(x, path, nrow: int = 8) -> Path:
    """Write the grid of :func:`image_grid` as a PNG at ``path`` (pixel for pixel)."""
    grid = np.rint(image_grid(x, nrow) * 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")   # whole file or the old one, never half
    try:
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def plot_forward_strip(diffusion, x0, ts: Sequence[int], generator=None, path=None):
    """The forward process q(x_t | x_0) at the 0-based indices ``ts``: one row per image
    in ``x0`` (B, C, H, W), one column per step, titled with paper time t = index + 1 and
    ᾱ_t. Each image keeps one noise draw ε across columns, so a row shows the signal
    √ᾱ_t x_0 fading under the growing noise √(1 − ᾱ_t) ε (DDPM eq. 4)."""
    x0 = torch.as_tensor(x0).float().cpu()
    diffusion = diffusion.cpu() if hasattr(diffusion, "cpu") else diffusion
    noise = torch.randn(x0.shape, generator=generator)
    fig, axes = plt.subplots(len(x0), len(ts), figsize=(1.3 * len(ts), 1.3 * len(x0) + 0.4), squeeze=False)
    for j, t in enumerate(ts):
        t_vec = torch.full((len(x0),), int(t), dtype=torch.long)
        x_t = diffusion.q_sample(x0, t_vec, noise=noise)
        for i in range(len(x0)):
            _imshow(axes[i, j], image_grid(x_t[i]))
        abar = float(diffusion.alphas_cumprod[int(t)])
        axes[0, j].set_title(f"t={int(t) + 1}\nᾱ={abar:.3g}", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_trajectory(trajectory, n_frames: int = 8, index: int = 0, path=None):
    """Reverse-process frames from ``ddpm_sample(..., return_trajectory=True)``: a list of
    ``(t_index, x_t, pred_x0)`` from x_T to x_0. Top row x_t, bottom row the predicted
    clean image x̂_0, for sample ``index`` (images) or for all points (2-D data).

    The sampler records, after the step at 0-based index i, the new sample x_{i} in paper
    time (so the first frame, index T, is x_T and the last, index 0, is x_0) together with
    the x̂_0 predicted on the way; the column titles give that paper time."""
    if len(trajectory) == 0:
        raise ValueError("the trajectory is empty.")
    pick = np.unique(np.linspace(0, len(trajectory) - 1, min(n_frames, len(trajectory))).round().astype(int))
    fig, axes = plt.subplots(2, len(pick), figsize=(1.5 * len(pick), 3.4), squeeze=False)
    shown = [v for k in pick for v in trajectory[k][1:] if v is not None]
    lim = 1.05 * float(max(v.abs().max() for v in shown)) if shown[0].ndim == 2 else None
    for j, k in enumerate(pick):
        t_idx, x_t, pred_x0 = trajectory[k]
        for row, value in enumerate((x_t, pred_x0)):
            ax = axes[row, j]
            if value is None:  # x_T: nothing predicted yet
                ax.set_axis_off()
            elif value.ndim == 2:  # (B, 2) points, on shared axes
                plot_points(value, ax=ax, s=2, lim=lim)
                ax.set_xticks([]), ax.set_yticks([])
            else:
                _imshow(ax, image_grid(value[index]))
        axes[0, j].set_title(f"t={int(t_idx)}", fontsize=8)
    fig.text(0.005, 0.72, "x_t", rotation=90, va="center")
    fig.text(0.005, 0.27, "x̂_0", rotation=90, va="center")
    fig.tight_layout(rect=(0.02, 0, 1, 1))
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------- curves
def moving_average(values, window: int) -> np.ndarray:
    """Mean over the last ``window`` values (shorter at the start), same length as input."""
    v = np.asarray(values, dtype=np.float64)
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_loss(losses, smooth: Optional[int] = None, path=None, ax=None, title: str = "training loss"):
    """Per-step losses (faint) and their moving average over ``smooth`` steps (default
    ~2% of the run), on a log y-axis."""
    losses = np.asarray([float(v) for v in losses], dtype=np.float64)
    if len(losses) == 0:
        raise ValueError("no losses to plot.")
    smooth = max(1, len(losses) // 50) if smooth is None else max(1, int(smooth))
    fig, ax = _new_ax(ax, (6, 3.5))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, alpha=0.3, lw=0.8, label="per step")
    ax.plot(steps, moving_average(losses, smooth), lw=2, label=f"moving average ({smooth})")
    if (losses > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)
    return fig


def plot_schedules(diffusions: dict, path=None):
    """ᾱ_t (left) and log SNR(t) = log(ᾱ_t / (1 − ᾱ_t)) (right) against paper time t for
    named processes, e.g. ``{"linear": GaussianDiffusion(schedule="linear"), ...}``."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, diffusion in diffusions.items():
        abar = diffusion.alphas_cumprod.detach().double().cpu().numpy()
        t = np.arange(1, len(abar) + 1)
        ax1.plot(t, abar, label=name)
        ax2.plot(t, np.log(abar) - np.log1p(-abar), label=name)
    ax1.set(xlabel="t", ylabel="ᾱ_t", title="signal kept, ᾱ_t")
    ax2.set(xlabel="t", ylabel="log SNR(t)", title="log signal-to-noise ratio")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------- 2-D data
def plot_points(x, ax=None, title: Optional[str] = None, path=None, lim: Optional[float] = None,
                **scatter_kwargs):
    """Scatter plot of 2-D points (N, 2) with equal axes."""
    x = _numpy(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"plot_points expects (N, 2) points, got shape {x.shape}.")
    fig, ax = _new_ax(ax, (4, 4))
    scatter_kwargs.setdefault("s", 4)
    scatter_kwargs.setdefault("alpha", 0.6)
    ax.scatter(x[:, 0], x[:, 1], **scatter_kwargs)
    ax.set_aspect("equal")
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    if title:
        ax.set_title(title)
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------- animations
def _frames_and_titles(frames, titles):
    if len(frames) == 0:
        raise ValueError("no frames to animate.")
    if isinstance(frames[0], tuple):  # a sampler trajectory of (t_index, x_t, pred_x0)
        titles = titles or [f"t = {int(t)}" for t, _, _ in frames]
        frames = [x for _, x, _ in frames]
    titles = list(titles) if titles is not None else [f"frame {i}" for i in range(len(frames))]
    if len(titles) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(titles)} titles.")
    return frames, titles


def animate_trajectory(frames, titles=None, nrow: int = 8, interval: int = 150):
    """An animation of image batches (each (B, C, H, W) in [−1, 1]) shown as grids, or of a
    sampler trajectory (list of ``(t_index, x_t, pred_x0)``). Display in a notebook with
    ``HTML(anim.to_jshtml())``. The figure is closed so it is not also shown statically."""
    frames, titles = _frames_and_titles(frames, titles)
    grids = [image_grid(f, nrow) for f in frames]
    fig, ax = plt.subplots(figsize=(4, 4 * grids[0].shape[0] / grids[0].shape[1] + 0.3))
    _imshow(ax, grids[0])
    image = ax.images[0]
    ax.set_title(titles[0])

    def update(i):
        image.set_data(grids[i][..., 0] if grids[i].shape[-1] == 1 else grids[i])
        ax.set_title(titles[i])
        return (image,)

    anim = animation.FuncAnimation(fig, update, frames=len(grids), interval=interval, blit=False)
    plt.close(fig)
    return anim


def animate_points(frames, titles=None, lim: Optional[float] = None, interval: int = 150, s: float = 3):
    """An animation of 2-D point clouds (each (N, 2)), e.g. samples moving from noise to
    data; accepts a sampler trajectory too. Display with ``HTML(anim.to_jshtml())``."""
    frames, titles = _frames_and_titles(frames, titles)
    frames = [_numpy(f) for f in frames]
    lim = lim if lim is not None else float(max(np.abs(f).max() for f in frames)) * 1.05
    fig, ax = plt.subplots(figsize=(4, 4))
    scat = ax.scatter(frames[0][:, 0], frames[0][:, 1], s=s, alpha=0.6)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=titles[0])

    def update(i):
        scat.set_offsets(frames[i])
        ax.set_title(titles[i])
        return (scat,)

    anim = animation.FuncAnimation(fig, update, frames=len(frames), interval=interval, blit=False)
    plt.close(fig)
    return anim
