"""The yardstick itself: the shipped classifier's accuracy and the FID floor vs sample size.

* Accuracy of the shipped MNIST classifier on the held-out ``mnist-sample`` test split
  (500 digits), and, if given, on the official MNIST test set (10,000 digits, the two
  ``t10k-*-idx?-ubyte.gz`` files in ``--mnist-test-dir``; optional, never downloaded).
* The real-vs-real classifier-FID floor, FID between two disjoint sets of n real digits,
  for several n: it shrinks like ~1/n, which is why FIDs must be compared at equal n.

    python benchmarks/bench_classifier.py [--mnist-test-dir DIR]
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch

from _common import add_note_option, machine, print_table, write_result
from diffusion_tutorial.classifier import accuracy, confident_share_on, load_classifier
from diffusion_tutorial.data import dataset_tensors, get_dataset, to_model_range
from diffusion_tutorial.metrics import classify, fid_from_features


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain), as in LeCun's MNIST distribution."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def official_test_set(folder: Path):
    def find(stem):
        for name in (stem + ".gz", stem):
            if (folder / name).exists():
                return folder / name
        raise SystemExit(f"{folder} has no {stem}[.gz]: give the folder with the MNIST test files.")
    images = torch.from_numpy(read_idx(find("t10k-images-idx3-ubyte")).copy()).float() / 255
    labels = torch.from_numpy(read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64))
    return to_model_range(images[:, None]), labels  # (N, 1, 28, 28) in [−1, 1]


def floors(images: torch.Tensor, sizes, seed: int = 0) -> list[dict]:
    feats, _ = classify(images)
    rows = []
    for n in sizes:
        if 2 * n > len(feats):
            continue
        values = []
        for r in range(3):
            idx = torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed + r))
            values.append(fid_from_features(feats[idx[:n]], feats[idx[n:2 * n]]))
        rows.append({"n": n, "fid_floor_mean": float(np.mean(values)),
                     "fid_floor_std": float(np.std(values))})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist-test-dir", default=None,
                   help="optional folder with the official MNIST t10k IDX files")
    p.add_argument("--out-dir", default=None)
    add_note_option(p)
    args = p.parse_args()
    clf = load_classifier("cpu")
    x_test, y_test = dataset_tensors(get_dataset("mnist-sample", train=False))
    x_all, _ = dataset_tensors(get_dataset("mnist-sample", train=None))
    rows = [{"test set": "mnist-sample held-out split", "n": len(x_test),
             "accuracy": accuracy(clf, x_test, y_test),
             "confident_share": confident_share_on(clf, x_test)}]
    floor_rows = floors(x_all, [50, 100, 250, 500, 1000, 2500])
    for r in floor_rows:
        r["real digits"] = "mnist-sample (all 5,000)"
    if args.mnist_test_dir:
        x_off, y_off = official_test_set(Path(args.mnist_test_dir))
        rows.append({"test set": "official MNIST test set", "n": len(x_off),
                     "accuracy": accuracy(clf, x_off, y_off),
                     "confident_share": confident_share_on(clf, x_off)})
        for r in floors(x_off, [100, 500, 1000, 2500, 5000]):
            r["real digits"] = "official MNIST test set"
            floor_rows.append(r)
    print_table(rows, ["test set", "n", "accuracy", "confident_share"])
    print()
    print_table(floor_rows, ["real digits", "n", "fid_floor_mean", "fid_floor_std"])
    write_result("classifier", {"machine": machine("cpu", args.note),
                                "accuracy": rows, "fid_floor_vs_n": floor_rows}, args.out_dir)


if __name__ == "__main__":
    main()
