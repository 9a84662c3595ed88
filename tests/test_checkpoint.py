"""Checkpoints: round trip, atomic replacement, and one-line errors for bad files."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from diffusion_tutorial import checkpoint as C
from diffusion_tutorial.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from diffusion_tutorial.config import get_config


def _save(run_dir, seed=0, step=3):
    torch.manual_seed(seed)
    model = {"w": torch.randn(4, 3), "b": torch.randn(3)}
    ema = {"w": torch.randn(4, 3), "b": torch.randn(3)}
    state = {"step": step, "log_pos": 10 * step, "rng": torch.get_rng_state(),
             "optimizer": {"state": {0: {"exp_avg": torch.randn(2)}}, "param_groups": [{"lr": 0.1}]}}
    config = get_config("tiny", run_dir=str(run_dir))
    save_checkpoint(run_dir, model_state=model, ema_state=ema, state=state, config=config)
    return model, ema, state, config


def test_round_trip(tmp_path):
    model, ema, state, config = _save(tmp_path)
    ckpt = load_checkpoint(tmp_path, config)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]
    assert sorted(os.listdir(tmp_path / "checkpoint")) == sorted(C.FILES)
    for k in model:
        assert torch.equal(ckpt.model_state[k], model[k]) and torch.equal(ckpt.ema_state[k], ema[k])
    assert ckpt.state["step"] == 3 and torch.equal(ckpt.state["rng"], state["rng"])
    assert torch.equal(ckpt.state["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    assert ckpt.config == config


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, _, _, _ = _save(tmp_path, seed=0, step=3)
    calls = {"n": 0}
    real_write = C._write

    def failing_write(path, data):
        calls["n"] += 1
        if calls["n"] == 3:          # crash in the middle of writing the new checkpoint
            raise OSError("disk full (simulated)")
        real_write(path, data)

    monkeypatch.setattr(C, "_write", failing_write)
    with pytest.raises(OSError, match="simulated"):
        _save(tmp_path, seed=1, step=6)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.state["step"] == 3 and torch.equal(ckpt.model_state["w"], model["w"])
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]      # no temp folder left behind


def test_crash_between_renames_falls_back_to_previous(tmp_path, monkeypatch):
    model, _, _, _ = _save(tmp_path, seed=0, step=3)
    real_replace = os.replace
    calls = {"n": 0}

    def crash_on_second(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:          # old checkpoint moved aside, new one not yet in place
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(C.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, seed=1, step=6)
    monkeypatch.setattr(C.os, "replace", real_replace)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.state["step"] == 3 and torch.equal(ckpt.model_state["w"], model["w"])
    _save(tmp_path, seed=2, step=9)   # the next save succeeds and becomes the checkpoint
    assert load_checkpoint(tmp_path).state["step"] == 9
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]      # the kept old one is cleaned up


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*train"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(tmp_path)


def test_incomplete_and_truncated_files(tmp_path):
    _save(tmp_path)
    file = tmp_path / "checkpoint" / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint" / "state.pt").write_bytes(b"\x00" * 10)
    file.write_bytes(data)
    with pytest.raises(CheckpointError, match="not a torch checkpoint .*truncated"):
        load_checkpoint(tmp_path)
    os.remove(file)
    with pytest.raises(CheckpointError, match="incomplete .*model.safetensors"):
        load_checkpoint(tmp_path)


def test_foreign_files(tmp_path):
    _save(tmp_path)
    (tmp_path / "checkpoint" / "config.json").write_text('{"learning_rate": 1}')
    with pytest.raises(CheckpointError, match="not a diffusion_tutorial config"):
        load_checkpoint(tmp_path)
    other = tmp_path / "other.safetensors"
    save_file({"layer.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(CheckpointError, match="do not fit this model"):
        load_weights(torch.nn.Linear(3, 3), C._load_tensors(other))


class Evil:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    _save(tmp_path)
    canary = tmp_path / "canary"
    pickle.loads(pickle.dumps(Evil(canary)))   # the payload does run when unpickled freely
    assert canary.exists()
    marker = tmp_path / "pwned"
    for protocol in (2, 4):
        with open(tmp_path / "checkpoint" / "state.pt", "wb") as f:
            pickle.dump({"step": Evil(marker)}, f, protocol=protocol)
        with pytest.raises(CheckpointError, match="refusing to load"):
            load_checkpoint(tmp_path)
        assert not marker.exists()
    # the same payload inside a torch zip file is refused too
    torch.save({"step": Evil(marker)}, tmp_path / "checkpoint" / "state.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_different_config_names_the_fields(tmp_path):
    _save(tmp_path)
    changed = get_config("tiny", base_channels=16, timesteps=50, steps=99, run_dir=str(tmp_path))
    with pytest.raises(CheckpointError, match="base_channels: 8 in checkpoint vs 16 now.*timesteps") as err:
        load_checkpoint(tmp_path, changed)
    assert "steps:" not in str(err.value).replace("timesteps", "")   # steps may change


def test_weights_with_nan_or_inf_are_refused_naming_the_tensor(tmp_path):
    """A run that diverged must not be sampled from or resumed: the tensor is named."""
    for bad in (float("nan"), float("inf")):
        model, ema, state, config = _save(tmp_path)
        ema["b"][1] = bad
        save_checkpoint(tmp_path, model_state=model, ema_state=ema, state=state, config=config)
        with pytest.raises(CheckpointError, match=r"ema.safetensors holds NaN or infinite weights "
                                                  r"\(b: 1 of 3 values\): the run diverged"):
            load_checkpoint(tmp_path)
    model["w"][:] = float("-inf")
    model["b"][0] = float("nan")
    ema["b"][1] = 0.0
    save_checkpoint(tmp_path, model_state=model, ema_state=ema, state=state, config=config)
    with pytest.raises(CheckpointError, match=r"model.safetensors .*\(b: 1 of 3 values; 1 more "
                                              r"tensor\(s\) too\)"):      # b named first: by name
        load_checkpoint(tmp_path)


def test_a_weight_mismatch_names_the_first_differing_tensors_and_shapes():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    weights.pop("1.bias")
    weights["0.weight"] = torch.zeros(5, 3)
    weights["head.weight"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as err:
        load_weights(net, weights, "ckpt")
    message = str(err.value)
    assert "1 missing (1.bias 2)" in message
    assert "1 unexpected (head.weight 7)" in message
    assert "1 of another shape (0.weight 5x3 in the file vs 4x3 here)" in message
    many = {f"extra{i}": torch.zeros(1) for i in range(5)}
    assert "5 unexpected (extra0 1, extra1 1, extra2 1, and 2 more)" in C.weight_mismatch({}, many)
    assert C.weight_mismatch(net.state_dict(), net.state_dict()) == ""
    load_weights(net, net.state_dict())                   # matching weights load


def test_run_config_is_written_atomically(tmp_path, monkeypatch):
    config = get_config("tiny", run_dir=str(tmp_path))
    C.write_run_config(tmp_path, config)
    assert C.read_run_config(tmp_path) == config

    def crash(*args):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(C.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        C.write_run_config(tmp_path, get_config("tiny", run_dir=str(tmp_path), steps=99))
    assert C.read_run_config(tmp_path).steps == config.steps       # the old file, whole
    assert sorted(os.listdir(tmp_path)) == ["config.json"]           # no temporary file left


@pytest.mark.parametrize("damage", [b"", b"  \n", b"\xff\xfe\x00garbage", b'{"steps": 1',
                                    b"[1, 2]", b'{"learning_rate": 1}'])
def test_a_damaged_run_config_falls_back_to_the_checkpoints_copy(tmp_path, capsys, damage):
    _, _, _, config = _save(tmp_path)
    (tmp_path / "config.json").write_bytes(damage)
    assert C.read_run_config(tmp_path) == config
    note = capsys.readouterr().err
    assert note.startswith(f"note: {tmp_path / 'config.json'} cannot be read")
    assert "checkpoint's copy" in note
    (tmp_path / "checkpoint" / "config.json").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"and so does the checkpoint's copy .*--overwrite"):
        C.read_run_config(tmp_path)


def test_a_missing_run_config_is_taken_from_the_checkpoint(tmp_path, capsys):
    _, _, _, config = _save(tmp_path)
    assert C.read_run_config(tmp_path) == config
    assert capsys.readouterr().err.startswith(f"note: {tmp_path / 'config.json'} is missing; using")


def test_a_damaged_run_config_without_a_checkpoint_says_what_to_do(tmp_path):
    (tmp_path / "config.json").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"config.json cannot be read \(the file is empty\) "
                                              r"and .* holds no checkpoint .*--overwrite"):
        C.read_run_config(tmp_path)
