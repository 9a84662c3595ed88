"""Output paths, checked before the work: so that minutes of training or sampling never end
in "Is a directory", "Permission denied" or a run silently written over.

:func:`check_run_dir` is called by :func:`diffusion_tutorial.train.train` (and the command
line's ``train``) before any data is read: the run folder must be a folder (or creatable)
that this user can write in, and, unless the caller resumes or overwrites, it must not
already hold a run. :func:`check_output_file` does the same for a PNG that ``sample`` is
about to write. Writability is tested by creating (and removing) a temporary file, because
``os.access`` answers "yes" to root even on a read-only file system.

``overwrite`` replaces a run: :func:`clear_run` deletes what the trainer wrote there (the
checkpoint, the loss log, ``config.json`` and the sample grids; other files are left alone),
and the trainer calls it only once the new run has its data and model, right before it
writes its first file. A bad flag or a missing dataset therefore leaves the old run whole.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Files whose presence means "this folder holds a run" (checkpoint.old-*: a save cut short).
RUN_MARKERS = ("checkpoint", "loss_log.jsonl", "config.json")
# Everything the trainer writes in a run folder (what overwriting deletes).
RUN_OUTPUTS = RUN_MARKERS + ("samples.png", "loss.png")
CLI_WORDS = {"resume": "--resume", "overwrite": "--overwrite", "out": "a new --out folder"}
API_WORDS = {"resume": "resume=True", "overwrite": "overwrite=True", "out": "a new run_dir"}


class OutputPathError(ValueError):
    """An output path that cannot be written; the message says what to choose instead."""


class RunExistsError(OutputPathError):
    """The run folder already holds a run and neither resume nor overwrite was asked for."""


def existing_run(run_dir) -> list:
    """The names in ``run_dir`` that show it holds a training run (empty: it holds none)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [name for name in RUN_MARKERS if (run_dir / name).exists()]
    return found + sorted(p.name for p in run_dir.glob("checkpoint.old-*"))


def _writable(folder: Path) -> bool:
    """Whether a file can be created in the existing ``folder`` (tried, then removed)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            return True
    except OSError:
        return False


def check_folder(folder, what: str, instead: str) -> None:
    """Raise :class:`OutputPathError` unless ``folder`` is a folder this user can write in,
    or one that can be created (its nearest existing parent is such a folder)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"cannot write {what} in {folder}: {existing} is a file, not a "
                              f"folder; {instead}.")
    if not _writable(existing):
        raise OutputPathError(f"cannot write {what} in {folder}: {existing} is read-only or not "
                              f"writable by this user; {instead}.")


def check_run_dir(run_dir, *, resume: bool = False, overwrite: bool = False,
                  words: dict = API_WORDS) -> None:
    """Refuse, before any work, a run folder that is a file, cannot be written, or already
    holds a run that is neither resumed nor meant to be overwritten. ``words`` names the
    options in the caller's terms (:data:`API_WORDS` or :data:`CLI_WORDS`)."""
    if resume and overwrite:
        raise OutputPathError(f"choose {words['resume']} (continue the run) or {words['overwrite']} "
                              "(replace it), not both.")
    run_dir = Path(run_dir)
    instead = f"choose {words['out']}"
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputPathError(f"{run_dir} is a file, not a run folder: {instead}.")
    check_folder(run_dir, "the run", instead)
    found = existing_run(run_dir)
    if found and not (resume or overwrite):
        raise RunExistsError(f"{run_dir} already holds a run ({', '.join(found)}): continue it with "
                             f"{words['resume']}, start afresh in {words['out']}, or replace it "
                             f"with {words['overwrite']}.")


def check_output_file(path, suffix: str = ".png", flag: str = "--out") -> Path:
    """Refuse, before any work, an output file that is a folder, has the wrong suffix, or
    cannot be written (missing folders are fine: they are created when it is written)."""
    folder_like = str(path).endswith(("/", os.sep))
    path = Path(path)
    example = f"such as {path / ('samples' + suffix)}"
    if folder_like or path.is_dir():
        raise OutputPathError(f"{flag} {path} is a folder: give a file name {example}.")
    if path.suffix.lower() != suffix:
        raise OutputPathError(f"{flag} {path}: the file is written as {suffix[1:].upper()}; give a "
                              f"name ending in {suffix}.")
    check_folder(path.parent, path.name, f"choose another {flag}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"cannot overwrite {path}: it is read-only; choose another {flag}.")
    return path


def clear_run(run_dir) -> None:
    """Delete what the trainer wrote in ``run_dir``: the checkpoint first (with any copies a
    save cut short left), then the loss log, ``config.json`` and the grids. Other files stay."""
    run_dir = Path(run_dir)
    doomed = [run_dir / name for name in RUN_OUTPUTS]
    doomed[1:1] = sorted(run_dir.glob("checkpoint.old-*")) + sorted(run_dir.glob("checkpoint.tmp-*"))
    doomed += sorted((run_dir / "samples").glob("step_*.png"))
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    samples = run_dir / "samples"
    if samples.is_dir() and not any(samples.iterdir()):
        samples.rmdir()
