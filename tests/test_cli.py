"""The command line: one-line errors for every fault, end to end train + sample, and a
run killed with SIGKILL that resumes with a valid checkpoint and a continuous loss log."""
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from diffusion_tutorial import cli
from diffusion_tutorial.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from diffusion_tutorial.cli import main
from diffusion_tutorial.config import get_config
from diffusion_tutorial.runs import load_run
from diffusion_tutorial.train import train

TINY = ["train", "--preset", "tiny", "--no-progress", "--device", "cpu"]


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, bars):
    run = tmp_path_factory.mktemp("cli") / "run"
    config = get_config("tiny", run_dir=str(run), steps=6, checkpoint_every=0, n_samples=4,
                        sample_steps=4, device="cpu")
    train(config, progress=False, dataset=bars)
    return run


def _copy(run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


def _faults(trained_run, tmp_path):
    """(name, argv, words in the error line) for each fault; may prepare files."""
    run = _copy(trained_run, tmp_path)
    ckpt = run / "checkpoint"
    truncated = tmp_path / "truncated"
    shutil.copytree(run, truncated)
    data = (truncated / "checkpoint" / "ema.safetensors").read_bytes()
    (truncated / "checkpoint" / "ema.safetensors").write_bytes(data[:100])
    foreign = tmp_path / "foreign"
    shutil.copytree(run, foreign)
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(foreign / "checkpoint" / "ema.safetensors"))
    evil = tmp_path / "evil"
    shutil.copytree(run, evil)
    with open(evil / "checkpoint" / "state.pt", "wb") as f:
        pickle.dump({"step": Evil(tmp_path / "pwned")}, f, protocol=2)
    corrupt = tmp_path / "corrupt_data"
    (corrupt / "MNIST" / "raw").mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (corrupt / "MNIST" / "raw" / name).write_bytes(b"not an idx file")
    diverged = tmp_path / "diverged"
    ckpt = load_checkpoint(run)
    ema = dict(ckpt.ema_state)
    first = next(iter(ema))
    ema[first] = ema[first].clone()
    ema[first].view(-1)[0] = float("nan")
    save_checkpoint(diverged, model_state=ckpt.model_state, ema_state=ema, state=ckpt.state,
                    config=ckpt.config)
    both_broken = tmp_path / "both_broken"
    shutil.copytree(run, both_broken)
    (both_broken / "config.json").write_bytes(b"")
    (both_broken / "checkpoint" / "config.json").write_bytes(b"\xff\xfe")
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    sample = ["sample", "--checkpoint", str(run), "--n", "4", "--steps", "2", "--no-progress"]
    return [
        ("run exists", TINY + ["--out", str(run)], "already holds a run (checkpoint, loss_log.jsonl, "
         "config.json): continue it with --resume, start afresh in a new --out folder, or replace "
         "it with --overwrite"),
        ("resume and overwrite", TINY + ["--out", str(run), "--resume", "--overwrite"], "not both"),
        ("out is a file", TINY + ["--out", str(afile)], "notes.txt is a file, not a run folder"),
        ("resume a file", ["train", "--out", str(afile), "--resume", "--no-progress"],
         "notes.txt is a file, not a run folder"),
        ("out under a file", TINY + ["--out", str(afile / "run")], "notes.txt is a file, not a folder"),
        ("lr nan", TINY + ["--lr", "nan", "--out", str(tmp_path / "r4")],
         "lr must be a finite number in (0, inf), got nan"),
        ("lr inf", TINY + ["--lr", "inf", "--out", str(tmp_path / "r4")], "got inf"),
        ("grad_clip -1", TINY + ["--grad-clip", "-1", "--out", str(tmp_path / "r4")],
         "grad_clip must be a finite number in [0, inf), got -1.0 (0 turns clipping off)"),
        ("p_uncond", TINY + ["--p-uncond", "1.5", "--out", str(tmp_path / "r4")], "in [0, 1], got 1.5"),
        ("ema_decay", TINY + ["--ema-decay", "1", "--out", str(tmp_path / "r4")], "in [0, 1), got 1.0"),
        ("weight_decay", TINY + ["--weight-decay", "nan", "--out", str(tmp_path / "r4")],
         "weight_decay must be a finite number in [0, inf)"),
        ("unknown device", TINY + ["--device", "gpu", "--out", str(tmp_path / "r4")], "unknown device 'gpu'"),
        ("sample under a file", sample + ["--out", str(afile / "grid.png")],
         "notes.txt is a file, not a folder"),
        ("sample into a folder", sample + ["--out", str(tmp_path)], "is a folder: give a file name"),
        ("sample as jpg", sample + ["--out", str(tmp_path / "grid.jpg")], "give a name ending in .png"),
        ("eta nan", sample + ["--eta", "nan", "--out", str(tmp_path / "g.png")], "--eta must be a finite"),
        ("guidance inf", sample + ["--guidance-scale", "inf", "--out", str(tmp_path / "g.png")],
         "--guidance-scale must be a finite number"),
        ("guidance unconditional", sample + ["--guidance-scale", "3", "--out", str(tmp_path / "g.png")],
         "this model is unconditional: drop --guidance-scale"),
        ("diverged checkpoint", ["sample", "--checkpoint", str(diverged), "--out", str(tmp_path / "g.png")],
         f"ema.safetensors holds NaN or infinite weights ({first}: 1 of"),
        ("both configs broken", ["train", "--out", str(both_broken), "--resume", "--no-progress"],
         "and so does the checkpoint's copy"),
        ("unknown dataset", TINY + ["--dataset", "minst"], "did you mean 'mnist'"),
        ("unknown preset", ["train", "--preset", "quik"], "did you mean 'quick'"),
        ("image size", TINY + ["--image-size", "9"], "cannot be halved"),
        ("T <= 0", TINY + ["--timesteps", "0"], "timesteps must be a positive"),
        ("betas", TINY + ["--beta-end", "1.5"], "betas must lie in (0, 1)"),
        ("batch size 0", TINY + ["--batch-size", "0"], "batch_size must be a positive"),
        ("bad flag value", TINY + ["--steps", "many"], "invalid int value"),
        ("missing checkpoint", ["sample", "--checkpoint", str(tmp_path / "nope")], "no checkpoint at"),
        ("truncated checkpoint", ["sample", "--checkpoint", str(truncated)], "truncated"),
        ("foreign checkpoint", ["sample", "--checkpoint", str(foreign)],
         "1 unexpected (encoder.weight 3x3)"),
        ("different config", TINY + ["--out", str(run), "--resume", "--base-channels", "16"],
         "base_channels: 8 in checkpoint vs 16 now"),
        ("malicious pickle", ["sample", "--checkpoint", str(evil)], "refusing to load"),
        ("corrupt data", TINY + ["--dataset", "mnist", "--data-dir", str(corrupt),
                                 "--out", str(tmp_path / "r1")], "has a bad magic number"),
        ("no network", TINY + ["--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "empty"),
                               "--out", str(tmp_path / "r2")], "could not download"),
        ("NaN loss", TINY + ["--lr", "1e30", "--grad-clip", "0", "--warmup-steps", "0",
                             "--out", str(tmp_path / "r3")], "at step"),
    ]


def _one_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_every_fault_gives_one_line_in_process(trained_run, tmp_path, capsys, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")        # no network
    monkeypatch.delenv("DIFFUSION_TUTORIAL_DEBUG", raising=False)
    faults = _faults(trained_run, tmp_path)
    before = snapshot(tmp_path)
    for name, argv, words in faults:
        with pytest.raises(SystemExit) if name in ("bad flag value",) else _nothing() as exit_info:
            code = main(argv)
        if name == "bad flag value":
            code = exit_info.value.code
        captured = capsys.readouterr()
        assert code != 0, (name, captured.out)
        line = _one_line(captured.err)
        assert words in line, (name, line)
    assert not (tmp_path / "pwned").exists()
    after = snapshot(tmp_path)          # nothing lost or changed; only the failed fresh runs wrote
    assert {k: v for k, v in after.items() if k in before} == before
    assert {k.split(os.sep)[0] for k in set(after) - set(before)} <= {"r1", "r2", "r3"}


def test_sample_into_a_read_only_folder_is_refused_before_sampling(trained_run, read_only_dir,
                                                                    capsys, monkeypatch):
    sampled = []
    monkeypatch.setattr(cli, "sample_images", lambda *a, **k: sampled.append(a))
    code = main(["sample", "--checkpoint", str(trained_run), "--out", str(read_only_dir / "g.png")])
    assert code == 1 and sampled == []
    assert "read_only is read-only or not writable by this user; choose another --out" in \
        _one_line(capsys.readouterr().err)


def test_ctrl_c_while_sampling_says_nothing_was_written(trained_run, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "sample_images", interrupted)
    assert main(["sample", "--checkpoint", str(trained_run), "--out", str(tmp_path / "g.png")]) == 130
    assert _one_line(capsys.readouterr().err) == "stopped: interrupted; no samples were written"
    assert list(tmp_path.iterdir()) == []


def test_load_run_refuses_non_finite_weights(trained_run, tmp_path):
    ckpt = load_checkpoint(trained_run)
    model = {k: v.clone() for k, v in ckpt.model_state.items()}
    name = next(k for k, v in model.items() if v.is_floating_point())
    model[name].view(-1)[-1] = float("inf")
    save_checkpoint(tmp_path, model_state=model, ema_state=ckpt.ema_state, state=ckpt.state,
                    config=ckpt.config)
    with pytest.raises(CheckpointError, match=rf"model.safetensors holds NaN or infinite weights \({name}"):
        load_run(tmp_path, "cpu")


def test_resume_with_a_damaged_config_json_uses_the_checkpoints_copy(trained_run, tmp_path, capsys):
    """The run's config.json is empty, not UTF-8 or missing: --resume says so on stderr, takes the
    settings from checkpoint/config.json, trains on, and writes a whole config.json again."""
    for i, damage in enumerate((b"", b"\xff\xfe\x00{", None)):
        run = tmp_path / f"run{i}"
        shutil.copytree(trained_run, run)
        if damage is None:
            (run / "config.json").unlink()
        else:
            (run / "config.json").write_bytes(damage)
        assert main(["train", "--out", str(run), "--resume", "--steps", "8", "--no-progress",
                     "--device", "cpu"]) == 0
        err = capsys.readouterr().err
        problem = "is missing" if damage is None else "cannot be read"
        assert f"note: {run / 'config.json'} {problem}" in err and "checkpoint's copy" in err
        assert load_checkpoint(run).state["step"] == 8
        assert json.loads((run / "config.json").read_text())["base_channels"] == 8


def test_overwrite_replaces_a_run(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    assert main([*TINY, "--out", str(run), "--steps", "3", "--overwrite"]) == 0
    assert _log_steps(run) == [1, 2, 3] and load_checkpoint(run).state["step"] == 3


def snapshot(folder):
    """{relative path: sha256} of every file under ``folder``."""
    return {os.path.relpath(os.path.join(d, f), folder):
            hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(folder) for f in files}


@pytest.mark.parametrize("argv, words, hint", [
    (["train", "--run-dir", "x"], "unrecognized arguments: --run-dir x", "train --help"),
    (["--run-dir"], "unrecognized arguments: --run-dir", "train --help"),  # train is the default
    (["sample", "--checkpoint", "c", "--stepz", "5"], "unrecognized arguments: --stepz 5",
     "sample --help"),
    (["smaple"], "invalid choice: 'smaple'", "--help"),
    (["train", "--channel-mults", "1,x"], "expected whole numbers separated by commas, such as 1,2,2; "
     "got '1,x'", "train --help"),
    (["train", "--out", ""], "--out: got an empty path (an unset shell variable?)", "train --help"),
    (["sample", "--checkpoint", " "], "--checkpoint: got an empty path", "sample --help"),
])
def test_a_usage_error_names_the_mistake_and_the_right_help(argv, words, hint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert words in line and line.endswith(f"(see `python -m diffusion_tutorial {hint}`)"), line


def test_train_is_the_default_command_also_with_flag_values(capsys):
    """`python -m diffusion_tutorial --preset tiny ...` means `train --preset tiny ...` (a
    flag's value must not be taken for a subcommand)."""
    assert main(["--preset", "tiny", "--steps", "7", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "preset 'tiny'" in out and re.search(r"^\s+steps\s+7$", out, re.M), out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.slow
def test_faults_via_subprocess(trained_run, tmp_path, cli_env):
    """The real process: exit code != 0, one stderr line, no traceback (a few faults; all
    of them are checked in-process above)."""
    faults = {f[0]: f for f in _faults(trained_run, tmp_path)}
    for name in ("unknown preset", "image size", "malicious pickle", "no network", "NaN loss",
                 "run exists", "lr nan", "sample under a file"):
        _, argv, words = faults[name]
        proc = subprocess.run([sys.executable, "-m", "diffusion_tutorial", *argv], env=cli_env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0, name
        assert words in _one_line(proc.stderr), name
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_end_to_end_train_then_sample(tmp_path, cli_env):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "diffusion_tutorial", *TINY, "--steps", "10",
                           "--out", str(run)], env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("samples.png", "loss.png", "loss_log.jsonl", "checkpoint/model.safetensors"):
        assert (run / name).exists(), name
    grid = tmp_path / "grid.png"
    proc = subprocess.run([sys.executable, "-m", "diffusion_tutorial", "sample", "--checkpoint", str(run),
                           "--sampler", "ddim", "--steps", "5", "--n", "9", "--out", str(grid),
                           "--no-progress"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from PIL import Image
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.size[0] > 3 * 8


def _log_steps(run):
    return [json.loads(l)["step"] for l in (run / "loss_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path, cli_env):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "diffusion_tutorial", *TINY, "--steps", "400",
            "--checkpoint-every", "20", "--out", str(run)]
    proc = subprocess.Popen(argv, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (run / "checkpoint").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    from diffusion_tutorial.checkpoint import load_checkpoint
    killed_at = load_checkpoint(run).state["step"]
    assert 20 <= killed_at < 400 and killed_at % 20 == 0
    done = subprocess.run(argv + ["--resume"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _log_steps(run) == list(range(1, 401))        # no gap, no duplicate
    assert load_checkpoint(run).state["step"] == 400


@pytest.mark.slow
def test_sigint_saves_and_exits_cleanly(tmp_path, cli_env):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "diffusion_tutorial", *TINY, "--steps", "100000",
            "--checkpoint-every", "50", "--out", str(run)]
    proc = subprocess.Popen(argv, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (run / "loss_log.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    line = _one_line(err)
    assert line.startswith("stopped: interrupted at step") and "--resume" in line
    from diffusion_tutorial.checkpoint import load_checkpoint
    step = load_checkpoint(run).state["step"]
    assert _log_steps(run) == list(range(1, step + 1))


def test_resume_without_preset_uses_the_runs_own_config(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TINY, "--steps", "4", "--checkpoint-every", "2", "--out", str(run)]) == 0
    # Only --out, --resume and a new step count: the tiny settings come from the run itself.
    assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--no-progress",
                 "--device", "cpu"]) == 0
    from diffusion_tutorial.checkpoint import load_checkpoint
    assert load_checkpoint(run).state["step"] == 6
    assert _log_steps(run) == list(range(1, 7))
    saved = json.loads((run / "config.json").read_text())
    assert saved["base_channels"] == get_config("tiny").base_channels and saved["steps"] == 6
