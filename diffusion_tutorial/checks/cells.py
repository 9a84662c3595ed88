"""The code cells of a submitted notebook, as the grader's fresh process and as the Jupyter
kernel run them. A file that is not a notebook, or cells that are not cells, give no cells
rather than an error. Chapter: For instructors.
"""
from __future__ import annotations

import ast
from typing import Optional


def _source(cell) -> str:
    source = cell.get("source", "") if isinstance(cell, dict) else ""
    if isinstance(source, list):
        source = "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


def notebook_cells(nb) -> list:
    """The notebook's cells, [] for anything that is not a notebook."""
    cells = nb.get("cells", []) if isinstance(nb, dict) else []
    return [c for c in cells if isinstance(c, dict)] if isinstance(cells, list) else []


def code_cells(nb) -> list[tuple[int, str]]:
    """(index, Python source) of every code cell, IPython magics and shell lines blanked: what
    the grader's fresh process runs."""
    cells = []
    for i, cell in enumerate(notebook_cells(nb)):
        if cell.get("cell_type") != "code":
            continue
        lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in _source(cell).split("\n")]
        cells.append((i, "\n".join(lines)))
    return cells


def kernel_cells(nb) -> list[tuple[int, str]]:
    """(index, source) of every code cell as the Jupyter kernel runs it (IPython's transformation
    of magics, shell lines and help; the source unchanged where IPython is missing)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        transform = TransformerManager().transform_cell
    except ImportError:  # pragma: no cover - IPython comes with otter and ipykernel
        def transform(source):
            return source
    cells = []
    for i, cell in enumerate(notebook_cells(nb)):
        if cell.get("cell_type") == "code":
            try:
                cells.append((i, transform(_source(cell))))
            except Exception:  # noqa: BLE001 - IPython's own syntax errors
                cells.append((i, _source(cell)))
    return cells


def parse(source: str) -> Optional[ast.Module]:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None
