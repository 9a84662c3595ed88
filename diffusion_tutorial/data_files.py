"""The dataset files on disk: reading MNIST, Fashion-MNIST and CIFAR-10, and fetching them.

:func:`diffusion_tutorial.data.get_dataset` calls :func:`read_mnist_like` and
:func:`read_cifar10`, which return the raw uint8 images and their labels. Files already
in ``root`` are used as they are (``<root>/MNIST/raw/*-ubyte[.gz]``,
``<root>/FashionMNIST/raw/...``, ``<root>/cifar-10-batches-py/``). Otherwise torchvision's
downloaders fetch them into a temporary folder, with a network timeout, and the files are
moved into place only when complete (:func:`download_into`), so a failed download leaves
nothing half-written behind. MNIST-format files are parsed here (:func:`read_idx`), so that
a damaged one is named with what is wrong with it; any file that cannot be parsed raises
:class:`CorruptDataError` with the advice to delete it. Chapter: Introduction.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import shutil
import socket
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from .outputs import check_folder

DOWNLOAD_TIMEOUT_S = 30.0
_CIFAR_DIR = "cifar-10-batches-py"


class DatasetUnavailableError(RuntimeError):
    """The dataset's files are not in ``data_dir`` and could not be downloaded."""


class CorruptDataError(RuntimeError):
    """A dataset file exists but cannot be read (truncated or damaged)."""


IDX_UBYTE = 0x08   # the IDX type code of unsigned bytes
# What to do about a damaged dataset file, in the command line's words and the API's.
REMEDY = ("delete it and run again with network access to fetch a fresh copy, point --data-dir "
          "(data_dir=) at a folder of good files, or use --dataset mnist-sample (offline)")


# ---------------------------------------------------------------------- MNIST / Fashion-MNIST
def read_mnist_like(root: Path, info, train: bool, download: bool):
    """MNIST or Fashion-MNIST (``info.name``) from ``root``, downloaded first if missing and
    allowed: uint8 images (N, 1, H, W) and int64 labels (N,)."""
    folder = "MNIST" if info.name == "mnist" else "FashionMNIST"   # torchvision's class names
    raw = root / folder / "raw"
    prefix = "train" if train else "t10k"
    names = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    if not all(_ensure_unzipped(raw / n) for n in names):
        if not download:
            raise DatasetUnavailableError(
                f"{info.name} files not found in {raw} (need {', '.join(names)}); pass "
                "download=True, point --data-dir at a folder that has them, or use "
                "'mnist-sample' (offline).")

        def fetch(tmp: Path) -> None:
            import torchvision.datasets as tvd   # seconds to import: only to download
            getattr(tvd, folder)(str(tmp), train=train, download=True)
            raw.mkdir(parents=True, exist_ok=True)
            for f in (tmp / folder / "raw").iterdir():
                if not f.name.endswith(".gz"):
                    os.replace(f, raw / f.name)
        download_into(info.name, root, fetch)
    images = _read(raw / names[0], lambda path: read_idx(path, ndim=3))   # (N, H, W) uint8
    labels = _read(raw / names[1], lambda path: read_idx(path, ndim=1))   # (N,)
    if images.shape[1:] != (info.image_size, info.image_size) or len(images) != len(labels):
        raise CorruptDataError(
            f"{raw / names[0]} holds {tuple(images.shape)} images and {raw / names[1]} "
            f"{len(labels)} labels, expected (N, {info.image_size}, {info.image_size}) and N "
            f"labels: {REMEDY.replace('it', 'both files', 1)}.")
    return images.unsqueeze(1).contiguous(), labels.long()


def read_idx(path, ndim: int) -> torch.Tensor:
    """An IDX file of unsigned bytes, the format of LeCun et al.'s MNIST files: a magic
    number of four bytes (0, 0, 0x08 for unsigned bytes, the number of dimensions), each
    dimension's size as a big-endian 32-bit integer, then the values in row-major order.
    Raises :class:`CorruptDataError` saying what is wrong (a bad magic number, the wrong
    number of dimensions, a truncated file)."""
    data = Path(path).read_bytes()
    magic = bytes([0, 0, IDX_UBYTE, ndim])
    header = 4 + 4 * ndim
    if data[:4] != magic:
        if data[:2] == b"\x1f\x8b":
            problem = f"is gzip-compressed: rename it to {Path(path).name}.gz, or"
        elif data[:3] == magic[:3] and len(data) >= 4:
            problem = f"has {data[3]} dimensions where {ndim} were expected:"
        else:
            problem = (f"has a bad magic number (0x{data[:4].hex() or 'empty'}, expected "
                       f"0x{magic.hex()}): it is not an IDX file of {ndim}-D unsigned bytes;")
        raise CorruptDataError(f"{path} {problem} {REMEDY}.")
    if len(data) < header:
        raise CorruptDataError(f"{path} is truncated inside its header ({len(data)} of {header} "
                               f"bytes): {REMEDY}.")
    sizes = struct.unpack(f">{ndim}I", data[4:header])
    count = math.prod(sizes)
    if len(data) - header != count:
        state = "is truncated" if len(data) - header < count else "is longer than its header says"
        raise CorruptDataError(
            f"{path} {state}: its header promises {' x '.join(map(str, sizes))} = {count:,} bytes "
            f"of values, the file holds {len(data) - header:,}: {REMEDY}.")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(sizes)


def _ensure_unzipped(path: Path) -> bool:
    """True when ``path`` exists, decompressing ``path.gz`` next to it if only that exists."""
    if path.exists():
        return True
    gz = path.with_name(path.name + ".gz")
    if not gz.exists():
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".unzip-")
    try:
        with gzip.open(gz, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, path)
    except (OSError, EOFError) as err:
        raise CorruptDataError(
            f"{gz} could not be decompressed ({err}); it is corrupt or truncated: {REMEDY}.") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return True


def _read(path: Path, reader):
    """Call ``reader(path)``, turning any parse failure into a :class:`CorruptDataError`."""
    try:
        return reader(str(path))
    except (FileNotFoundError, CorruptDataError):
        raise
    except Exception as err:  # a damaged file can fail in many ways inside a parser
        raise CorruptDataError(
            f"{path} is corrupt or truncated ({type(err).__name__}: {err}): {REMEDY}.") from err


# ---------------------------------------------------------------------- CIFAR-10
def read_cifar10(root: Path, info, train: bool, download: bool):
    """CIFAR-10 from ``root``, downloaded first if missing and allowed: uint8 images
    (N, 3, 32, 32) and int64 labels (N,)."""
    # torchvision takes seconds to import: only when these files are fetched
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    folder = root / _CIFAR_DIR
    files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    if not all((folder / f).exists() for f in files):
        if not download:
            raise DatasetUnavailableError(
                f"cifar10 files not found in {folder} (need {', '.join(files)}); pass "
                "download=True, point --data-dir at a folder that has them, or use "
                "'mnist-sample' (offline).")

        def fetch(tmp: Path) -> None:
            # torchvision's downloader with the class's URL and checksum; extracts in tmp
            download_and_extract_archive(tvd.CIFAR10.url, str(tmp), filename=tvd.CIFAR10.filename,
                                         md5=tvd.CIFAR10.tgz_md5)
            missing = [f for f in files if not (tmp / _CIFAR_DIR / f).exists()]
            if missing:
                raise RuntimeError(f"the archive lacks {', '.join(missing)}")
            if folder.exists():
                shutil.rmtree(folder)  # an incomplete earlier copy
            os.replace(tmp / _CIFAR_DIR, folder)
        download_into(info.name, root, fetch)
    data, labels = [], []
    for f in files:
        batch = _read(folder / f, _read_cifar_batch)
        data.append(batch[0])
        labels.append(batch[1])
    images = torch.from_numpy(np.concatenate(data)).reshape(-1, 3, 32, 32)  # (N, C, H, W)
    return images, torch.from_numpy(np.concatenate(labels))


class _Refused(pickle.UnpicklingError):
    """A pickle that names a callable outside :data:`_ArraysOnly.ALLOWED`."""


class _ArraysOnly(pickle.Unpickler):
    """Unpickles what a CIFAR-10 batch holds (dicts, lists, bytes, numbers and numpy arrays)
    and refuses any other callable, so a planted file cannot run code when it is read."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
    # numpy 1 wrote numpy.core.*, numpy 2 numpy._core.*: take them from numpy itself
    RENAMED = {"_reconstruct": lambda: np.zeros(0).__reduce__()[0],      # pickle protocols 0-4
               "_frombuffer": lambda: np.zeros(0).__reduce_ex__(5)[0]}   # protocol 5

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if name in self.RENAMED and module in ("numpy.core.multiarray", "numpy._core.multiarray",
                                               "numpy.core.numeric", "numpy._core.numeric"):
            return self.RENAMED[name]()
        raise _Refused(f"{module}.{name}")


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: a pickled dict with ``data`` uint8 (N, 3072), rows of
    R, G, B planes of 32x32, and ``labels`` (N,)."""
    try:
        with open(path, "rb") as f:
            entry = _ArraysOnly(f, encoding="latin1").load()
    except _Refused as err:
        raise CorruptDataError(f"refusing to read {path}: it is not a CIFAR-10 batch (its pickle "
                               f"names {err}, which could run code); {REMEDY}.") from None
    entry = {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
    return data, labels


# ---------------------------------------------------------------------- downloads
def download_into(name: str, root: Path, fetch, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Run ``fetch(tmp)`` in a fresh temporary folder inside ``root`` with a socket timeout;
    ``fetch`` moves finished files into place. Whatever happens, the temporary folder (and
    ``root`` itself, if this call created it and it stayed empty) is removed, so a failed
    download leaves no partial file behind."""
    check_folder(root, f"the downloaded {name} files", "point --data-dir (data_dir=) at another folder")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        fetch(tmp)
    except (KeyboardInterrupt, CorruptDataError):
        raise
    except Exception as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        reason = reason if len(reason) <= 240 else reason[:237] + "..."
        raise DatasetUnavailableError(
            f"could not download {name!r} into {root}: the network is unreachable or the server "
            f"failed ({reason}). Use the offline dataset 'mnist-sample', or pass --data-dir "
            "(data_dir=) pointing at a folder that already holds the files.") from err
    finally:
        socket.setdefaulttimeout(old_timeout)
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not any(root.iterdir()):
            root.rmdir()
