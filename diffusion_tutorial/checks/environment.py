"""The Python files a grading process may run, and whether a notebook changed them.

A notebook graded without isolation runs as the grader, so it can write files that a later
Python process imports or runs at start-up: a ``sitecustomize.py`` or a ``.pth`` file in a
folder of ``sys.path``, or a module of its own in place of one of torch's. The classroom plugin
notes :func:`fingerprint` of :func:`python_roots` before the notebook runs and again before
the grader's fresh process starts (:mod:`.otter_plugin`), and ``assignments/grade.py`` after
each submission: a change means that what follows cannot be trusted. Chapter: For instructors.
"""
from __future__ import annotations

import os
import site
import sys
import sysconfig

SUFFIXES = (".py", ".pth", ".pyc", ".so", ".pyd")


def python_roots(exclude=()) -> set[str]:
    """The folders of ``sys.path`` (site-packages, the standard library, ``PYTHONPATH``), the
    site-packages folders and the user site where it is enabled (even if it does not exist
    yet), less the folders in ``exclude`` and those inside them."""
    roots = {p for p in sys.path if p and os.path.isabs(p)}
    roots |= set(getattr(site, "getsitepackages", lambda: [])())
    roots |= {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    if site.ENABLE_USER_SITE:
        roots.add(site.getusersitepackages())
    skip = [os.path.realpath(e) for e in exclude if e]
    return {r for r in roots if not any(os.path.realpath(r) == s or os.path.realpath(r).startswith(s + os.sep)
                                        for s in skip)}


def fingerprint(roots) -> dict[str, tuple]:
    """{path: (size, mtime)} of every Python file (``SUFFIXES``) under ``roots``."""
    found = {}
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                if name.endswith(SUFFIXES):
                    path = os.path.join(folder, name)
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    found[path] = (st.st_size, st.st_mtime_ns)
    return found


def changed_files(before: dict, after: dict) -> list[str]:
    """Files added, removed or changed between two fingerprints; a ``__pycache__`` file that a
    first import made is not counted (a changed one is)."""
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p)
                  and not (p not in before and f"{os.sep}__pycache__{os.sep}" in p))
