"""What the classroom plugin changes in Otter's own process before a notebook runs, so that the
notebook's code cannot run code there.

Otter 7 reads three things with ``pickle`` in the process that grades (and runs the plugin):

1. the results that the notebook's kernel writes to a temporary file at the end of the run
   (``otter.execute.grade_notebook``): a notebook that replaces ``pickle.dump`` in its kernel
   can write a pickle that calls any function when it is read;
2. the log records that the kernel sends to Otter's logging server over a local socket, which
   any code in the kernel can connect to;
3. a ``.OTTER_LOG`` file in the submission (a zip can carry one), read before grading.

Each of these could switch the plugin off. :func:`harden_otter` makes Otter read (1) with an
unpickler that only builds Otter's own result classes, (2) with one that builds no classes at
all (a log record is a dict of plain values), and refuse (3) (the assignments do not grade from
the log). Chapter: For instructors.
"""
from __future__ import annotations

import io
import pickle
import types

# The classes a kernel's GradingResults pickle holds (checked with Otter 7.0).
RESULT_CLASSES = frozenset({
    ("otter.test_files", "GradingResults"),
    ("otter.test_files.abstract_test", "TestCase"),
    ("otter.test_files.abstract_test", "TestCaseResult"),
    ("otter.test_files.exception_test", "ExceptionTestFile"),
    ("otter.test_files.exception_test", "test_case"),
    ("otter.test_files.ok_test", "OKTestFile"),
    ("otter.test_files.metadata_test", "NotebookMetadataExceptionTestFile"),
    ("otter.test_files.metadata_test", "NotebookMetadataOKTestFile"),
})


class UnsafePickle(pickle.UnpicklingError):
    """A pickle from the notebook's kernel asked for something other than Otter's results."""


class _Restricted(pickle.Unpickler):
    def __init__(self, file, allowed) -> None:
        super().__init__(file)
        self.allowed = allowed

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise UnsafePickle(f"the notebook's kernel sent {module}.{name}, which the grader does not load")
        return super().find_class(module, name)


def load_results(file):
    """``pickle.load`` for the kernel's results: Otter's result classes only."""
    return _Restricted(file, RESULT_CLASSES).load()


def loads_plain(data: bytes):
    """``pickle.loads`` that builds no class: dicts, lists, strings and numbers only."""
    return _Restricted(io.BytesIO(data), frozenset()).load()


def _refuse_log(cls, filename, *args, **kwargs):
    raise UnsafePickle(f"the grader does not read {filename} from a submission")


def harden_otter() -> list[str]:
    """Make Otter's process read what the kernel wrote safely; returns what could not be changed
    (an Otter version whose internals differ), for the report."""
    missing = []
    try:
        import otter.execute as execute
        execute.pickle = types.SimpleNamespace(load=load_results, loads=load_results, dump=pickle.dump)
    except ImportError:
        missing.append("otter.execute")
    try:
        from otter.execute.logging import LogRecordStreamHandler
        LogRecordStreamHandler.unpickle = lambda self, data: loads_plain(data)
    except ImportError:
        missing.append("otter.execute.logging")
    try:
        from otter.check.logs import Log
        Log.from_file = classmethod(_refuse_log)
    except ImportError:
        missing.append("otter.check.logs")
    return missing
