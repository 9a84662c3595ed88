"""Metrics against independent truth: closed-form Fréchet distances, hand-made logits,
and the shipped classifier on held-out real digits."""
import math

import numpy as np
import pytest
import torch

from diffusion_tutorial.metrics import (class_entropy, class_histogram, confident_share,
                                        evaluate_samples, fid_from_features, frechet_distance,
                                        gaussian_stats)


# ---------------------------------------------------------------------- Fréchet distance
def test_fid_of_identical_features_is_zero():
    f = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    assert fid_from_features(f, f.clone()) == pytest.approx(0.0, abs=1e-6)


def test_fid_closed_form_for_commuting_covariances():
    # Σ1 = diag(a), Σ2 = diag(b): Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) = Σ_i (√a_i − √b_i)².
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([3.0, -1.0, 2.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(13 + 4 + 1)


def test_fid_matches_scipy_sqrtm_for_general_covariances():
    # The implementation uses eigen-decompositions; check it against the definition
    # evaluated with an independent general matrix square root (scipy.linalg.sqrtm).
    linalg = pytest.importorskip("scipy.linalg")
    g = np.random.default_rng(0)
    for d in (2, 5, 32):
        A, B = g.normal(size=(d, d)), g.normal(size=(d, d))
        s1, s2 = A @ A.T + 0.1 * np.eye(d), B @ B.T + 0.1 * np.eye(d)
        mu1, mu2 = g.normal(size=d), g.normal(size=d)
        covmean = linalg.sqrtm(s1 @ s2).real
        expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)


def test_fid_with_singular_covariances_is_finite():
    # Fewer samples than dimensions: both covariances are singular.
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(10, 64, generator=g), torch.randn(10, 64, generator=g) + 1
    value = fid_from_features(a, b)
    assert np.isfinite(value) and value > 64  # at least ‖μ1 − μ2‖² ≈ 64


def test_fid_of_shifted_gaussian_samples_matches_closed_form():
    # N(0, I) vs N(m, 4I) in D dims: d² = ‖m‖² + D (1 − 2)² = ‖m‖² + D.
    g = torch.Generator().manual_seed(1)
    D, n = 4, 20000
    m = torch.tensor([1.0, -2.0, 0.5, 0.0])
    x = torch.randn(n, D, generator=g)
    y = m + 2 * torch.randn(n, D, generator=g)
    expected = (m ** 2).sum().item() + D
    assert fid_from_features(x, y) == pytest.approx(expected, rel=0.03)


def test_gaussian_stats_and_shape_errors():
    f = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = gaussian_stats(f)
    np.testing.assert_allclose(mu, [2.0, 4.0])
    np.testing.assert_allclose(sigma, np.cov(f.numpy().T))
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ---------------------------------------------------------------------- logits
def test_confident_share_on_known_logits():
    # softmax([L, 0, ..., 0]) has max e^L / (e^L + 9): ≥ 0.9 exactly when L ≥ log 81.
    def row(L):
        r = torch.zeros(10)
        r[3] = L
        return r
    logits = torch.stack([row(math.log(81) + 0.01), row(math.log(81) - 0.01), row(10.0), row(0.0)])
    assert confident_share(logits) == pytest.approx(0.5)
    assert confident_share(logits, threshold=0.05) == pytest.approx(1.0)


def test_class_entropy_uniform_single_and_two_classes():
    eye = torch.eye(10) * 5
    assert class_entropy(eye.repeat(7, 1)) == pytest.approx(math.log(10))
    assert class_entropy(eye[[4] * 30]) == pytest.approx(0.0)
    two = eye[[1] * 10 + [2] * 30]  # p = (1/4, 3/4)
    assert class_entropy(two) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert class_histogram(two).tolist() == [0, 10, 30] + [0] * 7


# ---------------------------------------------------------------------- shipped classifier
@pytest.fixture(scope="module")
def held_out():
    from diffusion_tutorial.data import dataset_tensors, get_dataset
    return dataset_tensors(get_dataset("mnist-sample", train=False))


def test_shipped_classifier_accuracy_on_held_out_digits(held_out):
    from diffusion_tutorial.classifier import accuracy, load_classifier
    images, labels = held_out
    assert len(images) == 500
    assert accuracy(load_classifier("cpu"), images, labels) >= 0.9


def test_evaluate_samples_separates_real_digits_from_noise(held_out):
    images, _ = held_out
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:200]
    real = evaluate_samples(images[pick])
    noise = evaluate_samples(torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert set(real) >= {"fid", "fid_floor", "confident_share", "class_entropy", "class_counts"}
    # Held-out real digits sit at the floor (they are the same kind of draw); noise is far
    # above it, is rarely called a digit with confidence, and covers few classes.
    assert real["fid"] < 1.5 * real["fid_floor"]
    assert noise["fid"] > 5 * real["fid"]
    assert real["confident_share"] > 0.8 and real["class_entropy"] > 0.95 * math.log(10)
    assert noise["confident_share"] < 0.2
    # The ceiling is measured on all 500 held-out digits, of which these 200 are a part.
    assert noise["confident_share_real"] == real["confident_share_real"] > 0.9
    assert abs(real["confident_share"] - real["confident_share_real"]) < 0.05
    sub = evaluate_samples(images[pick[:100]], real=images)  # real given: held half only
    assert 0.8 < sub["confident_share_real"] <= 1
    assert sum(real["class_counts"]) == 200
    with pytest.raises(ValueError, match="28, 28"):
        evaluate_samples(torch.zeros(4, 3, 32, 32))


def test_shipped_classifier_is_not_confident_on_noise():
    from diffusion_tutorial.classifier import confident_share_on_noise, load_classifier
    assert confident_share_on_noise(load_classifier("cpu"), n=200, seed=1) < 0.05


# ---------------------------------------------------------------------- standard errors
def test_confident_share_standard_error_and_paired_difference_on_known_logits():
    from diffusion_tutorial.metrics import confident_share_standard_error, paired_confident_difference
    sure, unsure = [10.0] + [0.0] * 9, [0.0] * 10           # max prob 0.9992 vs 0.1
    a = torch.tensor([sure] * 6 + [unsure] * 4)              # 6 of 10 confident
    b = torch.tensor([sure] * 4 + [unsure] * 4 + [sure] * 2)  # 6 of 10, but other rows
    assert confident_share_standard_error(a) == pytest.approx(math.sqrt(0.6 * 0.4 / 10))
    diff, se = paired_confident_difference(a, b)
    d = np.array([0] * 4 + [-1] * 2 + [0] * 2 + [1] * 2, dtype=float)  # c_b - c_a row by row
    assert diff == pytest.approx(0.0) and se == pytest.approx(d.std(ddof=1) / math.sqrt(10))
    diff, se = paired_confident_difference(a, a)
    assert diff == 0 and se == 0
    with pytest.raises(ValueError, match="equally long"):
        paired_confident_difference(a, b[:5])


def test_fid_bootstrap_standard_error_matches_the_spread_over_independent_draws():
    """The bootstrap error from ONE generated set should match the real spread of the FID
    over many independent generated sets of the same size (within the bootstrap's own
    noise, ~25 % at these sizes), at two sample sizes."""
    from diffusion_tutorial.metrics import fid_standard_error
    g = torch.Generator().manual_seed(0)
    D = 4
    ref = torch.randn(20000, D, generator=g, dtype=torch.float64)
    def draw(n):  # a "model" whose features are shifted and stretched
        return 0.3 + 1.5 * torch.randn(n, D, generator=g, dtype=torch.float64)
    for n in (100, 400):
        spread = np.std([fid_from_features(draw(n), ref) for _ in range(300)], ddof=1)
        boot = np.mean([fid_standard_error(draw(n), ref, n_boot=100, seed=s) for s in range(5)])
        assert 0.7 < boot / spread < 1.4, (n, boot, spread)


def test_evaluate_samples_reports_standard_errors_when_asked(held_out):
    images, _ = held_out
    plain = evaluate_samples(images[:60])
    with_se = evaluate_samples(images[:60], n_boot=20)
    assert "fid_se" not in plain and with_se["fid"] == plain["fid"]
    p = with_se["confident_share"]
    assert with_se["confident_share_se"] == pytest.approx(math.sqrt(p * (1 - p) / 60))
    # the FID of 60 real digits moves by a few units from draw to draw, not by 0 or 100s
    assert 0.5 < with_se["fid_se"] < 0.5 * with_se["fid"]
