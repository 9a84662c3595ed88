"""Shipped weights: checksums verified on load, and a model that samples digits."""
import hashlib
import shutil

import pytest
import torch

from diffusion_tutorial import ddim_sample
from diffusion_tutorial.classifier import load_classifier
from diffusion_tutorial.pretrained import (PRETRAINED_DIR, ChecksumError, load_pretrained,
                                           read_info, sha256_file, verify_checksum)


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "x.bin"
    data = bytes(range(256)) * 5000  # > 1 MiB, so several chunks are read
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    verify_checksum(path, hashlib.sha256(data).hexdigest())


def _tampered_copy(tmp_path, stem):
    for f in PRETRAINED_DIR.glob(f"{stem}.*"):
        shutil.copy(f, tmp_path / f.name)
    weights = tmp_path / f"{stem}.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last tensor's bytes
    weights.write_bytes(bytes(data))
    return tmp_path


def test_load_pretrained_rejects_a_tampered_copy(tmp_path):
    directory = _tampered_copy(tmp_path, "mnist")
    with pytest.raises(ChecksumError, match="checksum mismatch for mnist.safetensors"):
        load_pretrained("mnist", device="cpu", directory=directory)


def test_load_classifier_rejects_a_tampered_copy(tmp_path):
    directory = _tampered_copy(tmp_path, "mnist_classifier")
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        load_classifier("cpu", directory=directory)


def test_unknown_name_says_what_exists():
    with pytest.raises(ValueError, match="mnist"):
        load_pretrained("cifar100", device="cpu")


def test_info_records_the_training_command_and_metrics():
    info = read_info("mnist")
    assert "python -m diffusion_tutorial train" in info["command"]
    assert info["sha256"] == sha256_file(PRETRAINED_DIR / info["weights"])
    for key in ("fid", "fid_floor", "confident_share", "class_entropy"):
        assert key in info["metrics"]
    total = sum(f.stat().st_size for f in PRETRAINED_DIR.iterdir())
    assert total < 6 * 2**20, f"shipped files are {total / 2**20:.1f} MiB"


def test_shipped_model_samples_finite_digits():
    model, diffusion, info = load_pretrained("mnist", device="cpu")
    assert not model.training and diffusion.num_timesteps == info["diffusion"]["timesteps"]
    x = ddim_sample(diffusion, model, (4, 1, 28, 28), steps=5,
                    generator=torch.Generator().manual_seed(0), progress=False)
    assert x.shape == (4, 1, 28, 28)
    assert torch.isfinite(x).all()
    # A trained ε_θ removes the noise; a model that predicts ε = 0 (an untrained UNet,
    # whose last layer starts at zero) leaves x_T / √ᾱ_T, values in the hundreds.
    untrained = ddim_sample(diffusion, lambda x_t, t: torch.zeros_like(x_t), (4, 1, 28, 28), steps=5,
                            generator=torch.Generator().manual_seed(0), progress=False)
    assert x.abs().mean() < 2 < 50 < untrained.abs().mean()


def test_conditional_model_records_its_command_and_guidance_sweep():
    info = read_info("mnist_cond")
    assert "--class-conditional" in info["command"] and info["config"]["class_conditional"]
    assert info["model"]["num_classes"] == 10
    assert info["sha256"] == sha256_file(PRETRAINED_DIR / info["weights"])
    rows = info["guidance_sweep"]["rows"]
    assert [row["w"] for row in rows] == [0.0, 1.0, 3.0, 5.0, 8.0]
    for row in rows:
        assert {"class_match", "class_match_se", "fid", "fid_se", "fid_floor", "n"} <= set(row)
    assert info["metrics"] == rows[1]   # the headline metrics are those of w = 1


def test_conditional_model_draws_the_requested_digits():
    from diffusion_tutorial.guidance import guidance_sweep
    from diffusion_tutorial.metrics import classify
    model, diffusion, _ = load_pretrained("mnist_cond", device="cpu")
    samples, labels = guidance_sweep(model, diffusion, [0.0, 3.0], 2, steps=10, seed=0)
    match = {w: (classify(x)[1].argmax(1) == labels).float().mean().item() for w, x in samples.items()}
    # 20 digits: guided, nearly all are the requested class; unguided (w = 0), about 1 in 10
    assert match[3.0] >= 0.8 > 0.5 > match[0.0]
