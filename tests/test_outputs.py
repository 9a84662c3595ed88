"""Output paths are checked before the work, and a run is never written over unasked."""
import hashlib
import importlib
import os

import pytest

from diffusion_tutorial.data import DatasetUnavailableError
from diffusion_tutorial.outputs import (CLI_WORDS, OutputPathError, RunExistsError, check_output_file,
                                        check_run_dir, clear_run, existing_run)
from diffusion_tutorial.train import train

T = importlib.import_module("diffusion_tutorial.train")   # the module; the package exports train()


def snapshot(folder):
    """{relative path: sha256} of every file under ``folder``."""
    return {os.path.relpath(os.path.join(d, f), folder):
            hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(folder) for f in files}


@pytest.mark.parametrize("trust_access", [True, False])
def test_a_read_only_folder_is_refused_before_any_work(read_only_dir, monkeypatch, trust_access):
    """Refused whether os.access tells the truth or, as for root on a read-only file system,
    says "writable": then the probe write finds out."""
    if not trust_access:
        monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)
    with pytest.raises(OutputPathError, match=r"read_only is read-only or not writable .*--out"):
        check_output_file(read_only_dir / "grid.png")
    with pytest.raises(OutputPathError, match="read_only is read-only or not writable"):
        check_run_dir(read_only_dir / "run")


def test_a_file_where_a_folder_belongs_is_refused(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    with pytest.raises(OutputPathError, match="notes.txt is a file, not a run folder"):
        check_run_dir(afile)
    with pytest.raises(OutputPathError, match="notes.txt is a file, not a folder"):
        check_run_dir(afile / "run")
    with pytest.raises(OutputPathError, match="notes.txt is a file, not a folder; choose another --out"):
        check_output_file(afile / "deeper" / "grid.png")
    assert afile.read_text() == "mine"


@pytest.mark.parametrize("out, words", [
    ("samples.jpg", "the file is written as PNG; give a name ending in .png"),
    ("grid", "give a name ending in .png"),
    ("folder/", "is a folder: give a file name such as"),
])
def test_an_output_file_name_of_the_wrong_kind_is_refused(tmp_path, out, words):
    with pytest.raises(OutputPathError, match=words):
        check_output_file(str(tmp_path / out) + ("/" if out.endswith("/") else ""))
    with pytest.raises(OutputPathError, match="is a folder"):
        check_output_file(tmp_path)
    # a missing folder is fine (it is created when the file is written), and nothing is made now
    assert check_output_file(tmp_path / "new" / "grid.png") == tmp_path / "new" / "grid.png"
    assert sorted(os.listdir(tmp_path)) == []


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    for marker in ("config.json", "loss_log.jsonl", "checkpoint", "checkpoint.old-1234abcd"):
        run = tmp_path / marker.replace(".", "_")
        run.mkdir()
        (run / marker).mkdir() if marker.startswith("checkpoint") else (run / marker).write_text("x")
        assert existing_run(run) == [marker]
        with pytest.raises(RunExistsError, match=rf"already holds a run \({marker}\): continue it "
                                                 r"with resume=True, .* overwrite=True"):
            check_run_dir(run)
        with pytest.raises(RunExistsError, match="--resume, start afresh in a new --out folder, or "
                                                 "replace it with --overwrite"):
            check_run_dir(run, words=CLI_WORDS)
        check_run_dir(run, resume=True)
        check_run_dir(run, overwrite=True)
        with pytest.raises(OutputPathError, match="not both"):
            check_run_dir(run, resume=True, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    check_run_dir(tmp_path / "other")                  # a folder without a run is fine


def test_clear_run_deletes_what_the_trainer_wrote_and_nothing_else(tmp_path):
    for name in ("checkpoint/model.safetensors", "checkpoint.old-1/x", "checkpoint.tmp-2/x",
                 "config.json", "loss_log.jsonl", "samples.png", "loss.png", "samples/step_000500.png",
                 "notes.txt", "samples/mine.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    clear_run(tmp_path)
    assert sorted(snapshot(tmp_path)) == ["notes.txt", os.path.join("samples", "mine.png")]
    assert existing_run(tmp_path) == []


def test_train_refuses_a_run_folder_that_holds_a_run_and_overwrite_replaces_it(tiny_config, bars,
                                                                              monkeypatch):
    """The API behaves as the command line: a second train() into the same folder is refused
    (nothing changes); overwrite=True whose data cannot be read keeps the old run whole; a
    working overwrite=True replaces it, leaving the user's own files alone."""
    tiny_config.steps, tiny_config.checkpoint_every = 4, 0
    run = train(tiny_config, progress=False, dataset=bars).run_dir
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    with pytest.raises(RunExistsError, match="resume=True"):
        train(tiny_config, progress=False, dataset=bars)

    def no_data(*args, **kwargs):
        raise DatasetUnavailableError("no network (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(T, "get_dataset", no_data)
        with pytest.raises(DatasetUnavailableError, match="simulated"):
            train(tiny_config, progress=False, overwrite=True)
    assert snapshot(run) == before
    tiny_config.steps = 3
    second = train(tiny_config, progress=False, dataset=bars, overwrite=True)
    assert second.step == 3 and len((run / "loss_log.jsonl").read_text().splitlines()) == 3
    assert (run / "notes.txt").read_text() == "mine"


def test_train_refuses_a_file_before_reading_any_data(tmp_path, tiny_config, monkeypatch):
    tiny_config.run_dir = str(tmp_path / "afile")
    (tmp_path / "afile").write_text("mine")
    read = []
    monkeypatch.setattr(T, "get_dataset", lambda *a, **k: read.append(a))
    with pytest.raises(OutputPathError, match="is a file, not a run folder"):
        train(tiny_config, progress=False)
    assert read == [] and (tmp_path / "afile").read_text() == "mine"
