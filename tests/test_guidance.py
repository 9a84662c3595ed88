"""guidance: the sweep samples every scale from the same noise, and the metrics and their
standard errors behave as their definitions say on inputs whose answer is known."""
import math

import numpy as np
import pytest
import torch

import diffusion_tutorial as dt
from diffusion_tutorial.guidance import (class_labels, compare, guidance_sweep, measure_guidance,
                                         summary_rows, sweep_report)
from diffusion_tutorial.metrics import real_digits
from diffusion_tutorial.data import get_dataset


def tiny_conditional():
    config = dt.get_config("tiny", class_conditional=True)
    torch.manual_seed(0)
    model = config.build_model().eval()
    with torch.no_grad():   # the UNet's last layer starts at zero; perturb it so that y matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, config.build_diffusion(), config


def test_class_labels_are_class_major():
    assert class_labels(3, 4).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    with pytest.raises(ValueError, match="n_per_class"):
        class_labels(0)


def test_sweep_uses_the_same_noise_at_every_scale():
    model, diffusion, config = tiny_conditional()
    samples, labels = guidance_sweep(model, diffusion, [0, 1, 4], 2, shape=(1, 8, 8), steps=5,
                                     eta=1.0, seed=3, clip_denoised=False)
    assert labels.tolist() == class_labels(2).tolist() and set(samples) == {0.0, 1.0, 4.0}
    # w = 1 is exactly the conditional sampler, started from the same generator state
    direct = dt.ddim_sample(diffusion, model, (20, 1, 8, 8), steps=5, eta=1.0, y=labels,
                            generator=torch.Generator().manual_seed(3), progress=False)
    assert torch.allclose(samples[1.0], direct.clamp(-1, 1))
    # the scales differ only through w: same x_T, so w = 4 and w = 0 are not independent draws,
    # and guidance changes the samples
    assert not torch.allclose(samples[4.0], samples[0.0])


def test_sweep_batches_give_the_same_labels_and_shapes():
    model, diffusion, _ = tiny_conditional()
    samples, labels = guidance_sweep(model, diffusion, [2], 3, shape=(1, 8, 8), steps=3, batch_size=7)
    assert samples[2.0].shape == (30, 1, 8, 8) and len(labels) == 30
    assert samples[2.0].abs().max() <= 1


def test_sweep_needs_a_conditional_model():
    config = dt.get_config("tiny")
    with pytest.raises(ValueError, match="class-conditional"):
        guidance_sweep(config.build_model(), config.build_diffusion(), [1], 1, shape=(1, 8, 8))


@pytest.fixture(scope="module")
def real_with_labels():
    data = get_dataset("mnist-sample", train=False)
    images, labels = real_digits(train=False), torch.tensor([data[i][1] for i in range(len(data))])
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:300]   # all classes
    return images[pick], labels[pick]


def test_metrics_on_real_digits_with_right_and_shuffled_labels(real_with_labels):
    images, labels = real_with_labels
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    right = measure_guidance({1.0: images}, labels, n_boot=50)[1.0]
    wrong = measure_guidance({1.0: images}, shuffled, n_boot=50)[1.0]
    # the classifier reads almost every held-out digit as its label; shuffled labels match ~1/10
    assert right["class_match"] > 0.9
    assert abs(wrong["class_match"] - 0.1) < 4 * math.sqrt(0.1 * 0.9 / len(labels))
    p, n = right["class_match"], right["n"]
    assert right["class_match_se"] == pytest.approx(math.sqrt(p * (1 - p) / n))
    # real digits against the train split: an FID near the real-vs-real floor, and a bootstrap
    # spread that is positive but much smaller than the FID of noise
    assert right["fid"] < 3 * right["fid_floor"] and right["fid_se"] > 0
    assert {"match", "fid_boot"} <= set(right) and len(right["fid_boot"]) == 50


def test_compare_gives_paired_differences(real_with_labels):
    images, labels = real_with_labels
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    m = measure_guidance({0.0: noise, 1.0: images}, labels, n_boot=40)
    diff, se = compare(m, 0.0, 1.0)
    assert diff == pytest.approx(m[1.0]["class_match"] - m[0.0]["class_match"])
    a, b = m[0.0]["match"], m[1.0]["match"]
    assert se == pytest.approx(np.std(b - a, ddof=1) / math.sqrt(len(a)))
    fid_diff, fid_se = compare(m, 0.0, 1.0, key="fid")
    assert fid_diff < 0 and fid_se > 0 and abs(fid_diff) > 5 * fid_se   # digits beat noise clearly
    with pytest.raises(ValueError, match="class_match"):
        compare(m, 0.0, 1.0, key="entropy")
    rows = summary_rows(m)
    assert [r["w"] for r in rows] == [0.0, 1.0] and "match" not in rows[0]


def test_sweep_report_is_json_ready_with_one_row_per_scale_and_a_class_per_grid_row():
    import json
    config = dt.get_config("tiny", class_conditional=True, image_size=28)
    torch.manual_seed(0)
    model = config.build_model().eval()
    report, grid = sweep_report(model, config.build_diffusion(), [0, 1, 3], 2, steps=2, n_boot=5,
                                grid_columns=2)
    assert [row["w"] for row in report["rows"]] == [0.0, 1.0, 3.0]
    assert report["n_per_class"] == 2 and report["rows"][0]["n"] == 20
    json.dumps(report)
    assert grid.shape == (20, 1, 28, 28)


def test_the_floor_uses_held_out_digits_with_the_same_class_counts():
    from diffusion_tutorial.guidance import _held_out_like
    data = get_dataset("mnist-sample", train=False)
    labels = torch.tensor([3] * 20 + [7] * 60)
    real = _held_out_like(labels, seed=0)
    assert len(real) == 20 + 50          # 50 held-out digits per class at most
    held = real_digits(train=False)
    targets = torch.tensor([data[i][1] for i in range(len(data))])
    # every picked digit is a held-out 3 or 7, and no digit is picked twice
    found = [int(torch.nonzero((held == x).flatten(1).all(1)).flatten()[0]) for x in real]
    assert len(set(found)) == len(found)
    assert sorted(targets[found].tolist()) == [3] * 20 + [7] * 50
