"""The GPU benchmarks' shared pieces (benchmarks/_perf.py), checked on a CPU: issue 10's
targets, the steady rate of a loss log, random CIFAR-10-format data read back by the
package, the time-limited command runner and the profile's categories."""
import importlib.util
import json
import pickle
import sys
from pathlib import Path

import pytest
import torch

import diffusion_tutorial as dt

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def perf():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("_perf", ROOT / "benchmarks" / "_perf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_cifar10_files_read_back_by_the_package(perf, tmp_path):
    folder = perf.write_random_cifar10(tmp_path, n_per_batch=20, seed=3)
    assert perf.has_cifar10(tmp_path) and not perf.has_cifar10(tmp_path / "elsewhere")
    train = dt.get_dataset("cifar10", tmp_path, train=True, download=False)
    test = dt.get_dataset("cifar10", tmp_path, train=False, download=False)
    assert (len(train), len(test)) == (100, 20)
    with open(folder / "data_batch_2", "rb") as f:      # read independently of the package
        batch = pickle.load(f)
    row = torch.from_numpy(batch["data"][7].reshape(3, 32, 32))   # R, G, B planes of 32x32
    assert torch.equal(train.data[20 + 7], row)
    assert int(train.targets[20 + 7]) == batch["labels"][7]
    x, y = train[27]
    assert x.shape == (3, 32, 32) and -1 <= x.min() and x.max() <= 1
    assert torch.allclose(x, row.float() / 127.5 - 1)
    # noise: all 256 values appear, with the mean of a uniform 0..255 within 5 standard errors
    pixels = train.data.double()
    assert len(pixels.unique()) == 256
    assert abs(pixels.mean().item() - 127.5) < 5 * 73.9 / pixels.numel() ** 0.5


def test_has_mnist_needs_both_training_files(perf, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert not perf.has_mnist(tmp_path)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"")
    assert perf.has_mnist(tmp_path)


def test_steady_rate_skips_the_start(perf, tmp_path):
    # 10 s of start-up (compilation) before step 1, then exactly 20 steps/s
    records = [{"step": k, "loss": 1.0, "time": 10 + (k - 1) / 20} for k in range(1, 401)]
    log = tmp_path / "loss_log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in reversed(records)) + "\n")
    read = perf.read_loss_log(log)
    assert [r["step"] for r in read] == list(range(1, 401))
    rate = perf.steady_rate(read, skip_s=12.0)
    assert rate["steps_per_s"] == pytest.approx(20.0)
    assert rate["from_step"] == 41 and rate["to_step"] == 400
    # counting from the start instead would include the start-up and be far slower
    assert 399 / records[-1]["time"] < 0.7 * rate["steps_per_s"]
    assert perf.steady_rate(read, skip_s=1e9) is None


def test_targets_judged_only_on_an_h100_class_gpu(perf):
    assert perf.target_applies("NVIDIA H200") and perf.target_applies("NVIDIA H100 80GB HBM3")
    assert not perf.target_applies("Tesla T4") and not perf.target_applies(None)
    met = perf.target_row("cifar10_cli_images_per_s", 6000.0, True)
    missed = perf.target_row("cifar10_cli_images_per_s", 2262.0, True)
    cpu = perf.target_row("cifar10_cli_images_per_s", 30.0, False)
    assert (met["met"], missed["met"], cpu["met"]) == (True, False, None)
    assert met["goal"] == 5400 and "why_not_judged" in cpu
    text = perf.format_targets([met, missed, cpu])
    assert "NOT met" in text and "not judged" in text and text.count("\n") == 2


def test_peak_flops_from_the_gpu_name(perf):
    assert perf.peak_flops("NVIDIA H200")[0] == 989e12
    assert perf.peak_flops("Tesla T4")[0] == 65e12 and "fp16" in perf.peak_flops("Tesla T4")[1]
    assert perf.peak_flops("Some New GPU")[0] == 0.0
    assert perf.peak_flops(None, override_tflops=100)[0] == 100e12


def test_model_step_flops_matches_a_real_count(perf):
    """On the meta device, the same count as a real forward and backward pass on the CPU
    with attention computed as plain matrix products (the CPU's fused attention kernel
    is not counted by FlopCounterMode)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from diffusion_tutorial.flops import training_step_flops
    config = dt.get_config("tiny", batch_size=4)
    model = config.build_model()
    x, t = torch.randn(4, 1, 8, 8), torch.randint(0, 100, (4,))
    with sdpa_kernel(SDPBackend.MATH):
        real = training_step_flops(model, (x, t), loss_fn=lambda out: out.pow(2).mean())
    assert perf.model_step_flops(config) == real > 0


def test_categories_of_op_and_kernel_names(perf):
    cases = {"aten::cudnn_convolution": "convolution", "aten::convolution_backward": "convolution",
             "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc": "convolution",
             "sm80_xmma_wgrad_implicit_gemm_indexed_f16f16": "convolution",
             "aten::native_group_norm": "normalization",
             "triton_red_fused_native_group_norm_3": "normalization",
             "aten::_scaled_dot_product_efficient_attention": "attention",
             "fmha_cutlassF_bf16_aligned": "attention",
             "aten::_softmax": "attention", "aten::addmm": "other", "aten::silu": "other"}
    for name, cat in cases.items():
        assert perf.category(name) == cat, name


def test_profile_shares_on_a_cpu(perf):
    """A step that is almost all convolution (about 1,000 times the arithmetic of its group
    norm) is reported as such; the shares add to 1. The times are wall-clock CPU times, so
    on a busy machine only the ordering is certain enough to test."""
    conv = torch.nn.Conv2d(32, 32, 3, padding=1)
    norm = torch.nn.GroupNorm(4, 32)
    x = torch.randn(8, 32, 48, 48)

    def step():
        for _ in range(3):
            conv(x).sum().backward()
        norm(x[:1, :, :4, :4]).sum().backward()
    step()                                               # first calls allocate and pick kernels
    prof = perf.profile_shares(step, cuda=False)
    s = prof["shares"]
    assert set(s) == set(perf.CATEGORIES) and abs(sum(s.values()) - 1) < 1e-9
    assert s["convolution"] > s["normalization"] > 0 and s["attention"] == 0
    assert prof["total_ms"] > 0 and prof["top"][0]["category"] == "convolution"
    assert "convolution bounds the step" in perf.bound_text(prof)


def test_run_command_stops_at_the_limit(perf, tmp_path):
    log = tmp_path / "log.txt"
    slow = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    run = perf.run_command(slow, 3, log, "sleeper", grace=5)
    assert run["timed_out"] and run["wall_s"] < 30 and run["rc"] != 0
    # Ctrl-C first: a program that handles it (as the training CLI does) ends in its own way
    polite = [sys.executable, "-c", "import sys, time\nprint('go', flush=True)\ntry:\n time.sleep(60)\n"
              "except KeyboardInterrupt:\n print('saved', flush=True); sys.exit(130)"]
    run = perf.run_command(polite, 3, log, "polite", interrupt_first=True, grace=20)
    assert run["timed_out"] and run["rc"] == 130 and "saved" in run["tail"]
    quick = perf.run_command([sys.executable, "-c", "print('x' * 100000)"], 60, log, "long output")
    assert quick["rc"] == 0 and not quick["timed_out"]
    text = log.read_text()
    assert "===== sleeper" in text and "[... output cut ...]" in text
    assert len(text) < 2 * perf.LOG_CAP
