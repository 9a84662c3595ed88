"""The optional Inception-FID benchmark fails cleanly offline: wrong dataset, no backend."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_tutorial import get_config, train

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_fid_cifar10.py"


def run_script(args, tmp_path, block_backends=True):
    """Run the script as a user would, with torch_fidelity and cleanfid made unimportable
    (stub modules earlier on the path that raise ImportError), whatever is installed."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if block_backends:
        stubs = tmp_path / "stubs"
        stubs.mkdir(exist_ok=True)
        for name in ("torch_fidelity", "cleanfid"):
            (stubs / f"{name}.py").write_text(f"raise ImportError('{name} blocked by the test')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(stubs), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args),
                           "--out-dir", str(tmp_path / "results")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def cifar10_run_folder(path: Path) -> Path:
    """A run folder whose checkpoint config says cifar10 (config only: the script must
    refuse, or find its backend missing, before it loads any weights)."""
    config = get_config("cifar10", validate=False, run_dir=str(path)).validate(check_model=False)
    ckpt = path / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(config.to_json())
    return path


def test_refuses_a_non_cifar10_run(tmp_path):
    run_dir = tmp_path / "run"
    train(get_config("tiny", steps=2, run_dir=str(run_dir)), progress=False)
    out = run_script([run_dir, "--n", "4"], tmp_path, block_backends=False)
    assert out.returncode != 0
    err = out.stderr.strip().splitlines()
    assert len(err) == 1, out.stderr                     # one line, no traceback
    assert "for CIFAR-10 runs" in err[0] and "'mnist-sample'" in err[0]
    assert "bench_quality_vs_steps.py" in err[0] and "classifier-FID" in err[0]
    assert not (tmp_path / "results").exists()


def test_no_backend_exits_2_with_pip_advice(tmp_path):
    run_dir = cifar10_run_folder(tmp_path / "run")
    out = run_script([run_dir, "--n", "4"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "pip install torch-fidelity" in out.stderr and "pip install clean-fid" in out.stderr
    assert "internet" in out.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("backend", ["torch-fidelity", "clean-fid"])
def test_named_backend_missing_names_its_package(tmp_path, backend):
    run_dir = cifar10_run_folder(tmp_path / "run")
    out = run_script([run_dir, "--backend", backend], tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"pip install {backend}" in out.stderr and "Traceback" not in out.stderr


def small_cifar10_checkpoint(path: Path) -> Path:
    """A real (untrained, tiny) 32x32 RGB checkpoint, without downloading CIFAR-10."""
    from diffusion_tutorial.checkpoint import save_checkpoint
    config = get_config("tiny", dataset="cifar10", image_size=32, run_dir=str(path))
    model = config.build_model()
    save_checkpoint(path, model_state=model.state_dict(), ema_state=model.state_dict(),
                    state={"step": 0}, config=config)
    return path


FAKE_FIDELITY = '''
from pathlib import Path
from PIL import Image
def calculate_metrics(input1, input2, fid, **kwargs):
    {body}
'''


def test_samples_reach_the_backend_and_result_is_written(tmp_path):
    """With a stand-in torch_fidelity, the script writes --n 32x32 RGB PNGs and records
    the FID the backend returns (here: a value computed from the files it was given)."""
    import json
    run_dir = small_cifar10_checkpoint(tmp_path / "run")
    fake = tmp_path / "fake"
    fake.mkdir()
    body = ('files = sorted(Path(input1).glob("*.png"))\n'
            '    assert input2 == "cifar10-train" and fid is True\n'
            '    assert all(Image.open(f).size == (32, 32) and Image.open(f).mode == "RGB" for f in files)\n'
            '    return {"frechet_inception_distance": 100.0 + len(files)}')
    (fake / "torch_fidelity.py").write_text(FAKE_FIDELITY.format(body=body))
    env_path = os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, str(SCRIPT), str(run_dir), "--n", "5", "--batch", "3",
                          "--steps", "2", "--device", "cpu", "--backend", "torch-fidelity",
                          "--out-dir", str(tmp_path / "results")],
                         cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=env_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "results" / "fid_cifar10.json").read_text())
    assert result["fid"] == pytest.approx(105.0)          # 5 PNGs reached the backend
    assert (result["n"], result["sampler"], result["steps"], result["backend"]) == (5, "ddim", 2, "torch-fidelity")
    assert result["eta"] == 0.0 and result["seconds"] > 0 and "machine" in result


def test_offline_download_failure_is_one_clear_line(tmp_path):
    run_dir = small_cifar10_checkpoint(tmp_path / "run")
    fake = tmp_path / "fake"
    fake.mkdir()
    body = ('import urllib.error\n'
            '    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")')
    (fake / "torch_fidelity.py").write_text(FAKE_FIDELITY.format(body=body))
    env_path = os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, str(SCRIPT), str(run_dir), "--n", "2", "--steps", "1",
                          "--device", "cpu", "--out-dir", str(tmp_path / "results")],
                         cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=env_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "could not download" in out.stderr and "internet" in out.stderr
    assert not (tmp_path / "results").exists()
