"""The classifier's training command: one epoch of the recipe learns digits, and what it writes
loads back through the checksum-verified loader."""
import json

import pytest

from diffusion_tutorial.classifier import accuracy, load_classifier
from diffusion_tutorial.classifier_train import main
from diffusion_tutorial.data import dataset_tensors, get_dataset


def test_one_epoch_learns_digits_and_saves_loadable_weights(tmp_path, capsys):
    main(["--out", str(tmp_path), "--epochs", "1"])
    assert "held-out accuracy" in capsys.readouterr().out
    info = json.loads((tmp_path / "mnist_classifier.json").read_text())
    # chance is 0.1; one epoch on the 4,500 train digits reached 0.93 when this test was written
    assert info["test_accuracy"] >= 0.85
    assert info["commands"] == [f"python -m diffusion_tutorial.classifier_train --out {tmp_path} --epochs 1"]
    model = load_classifier("cpu", directory=tmp_path)            # verifies the recorded sha256
    images, labels = dataset_tensors(get_dataset("mnist-sample", train=False))
    # the saved weights are float16: the accuracy may move by a digit or two out of 500
    assert accuracy(model, images, labels) == pytest.approx(info["test_accuracy"], abs=0.01)
