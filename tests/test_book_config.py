"""The book's configuration is consistent: toc entries exist, notebooks are committed
clean and runnable on Colab, citations resolve, and the offline JavaScript is shipped."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def toc_files() -> list[str]:
    files = [TOC["root"]]
    for part in TOC.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def test_toc_lists_the_chapters_in_order():
    files = [Path(f).name for f in toc_files()]
    chapters = [f for f in files if re.match(r"\d\d_", f)]
    assert chapters == sorted(chapters), f"chapters out of order: {chapters}"
    assert [c[:2] for c in chapters] == [f"{i:02d}" for i in range(len(chapters))], chapters
    assert {"instructors", "benchmarks", "references"} <= set(files)


@pytest.mark.parametrize("entry", toc_files())
def test_toc_entry_exists(entry):
    found = [p for p in (ROOT / f"{entry}.ipynb", ROOT / f"{entry}.md") if p.exists()]
    assert found, f"_toc.yml lists {entry!r} but neither {entry}.ipynb nor {entry}.md exists"


def test_every_notebook_is_in_the_toc():
    listed = set(toc_files())
    missing = [p.name for p in NOTEBOOKS if str(p.relative_to(ROOT).with_suffix("")) not in listed]
    assert not missing, f"notebooks not in _toc.yml (only_build_toc_files skips them): {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs; clear them with "
                       "`jupyter nbconvert --clear-output --inplace`")
    assert "widgets" not in nb.metadata, f"{path.name}: stored widget state in the metadata; clear it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_hidden_install_cell_and_reads_quick_mode(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code", f"{path.name}: the first cell should be the install cell"
    assert "remove-cell" in first.metadata.get("tags", []), f"{path.name}: tag the install cell remove-cell"
    assert "diffusion_tutorial" in first.source and "pip" in first.source, \
        f"{path.name}: the install cell should pip-install the package when it is missing"
    assert any("quick_mode()" in c.source for c in nb.cells if c.cell_type == "code"), \
        f"{path.name}: read QUICK = dt.quick_mode() in the setup cell"


def _bib_keys() -> set[str]:
    keys = set()
    for bib in CONFIG["bibtex_bibfiles"]:
        keys |= set(re.findall(r"^@\w+\{([^,\s]+),", (ROOT / bib).read_text(), re.M))
    return keys


def test_bibliography_has_the_core_papers():
    keys = _bib_keys()
    for key in ["ho2020denoising", "nichol2021improved", "song2021denoising", "rombach2022high",
                "song2021score", "sohldickstein2015deep"]:
        assert key in keys, f"{key} missing from the bibliography"


def test_every_citation_resolves():
    keys = _bib_keys()
    sources = NOTEBOOKS + sorted((ROOT / "book").glob("*.md"))
    cited = {}
    for path in sources:
        for group in re.findall(r"\{cite[:\w]*\}`([^`]+)`", path.read_text()):
            for key in group.split(","):
                cited.setdefault(key.strip(), path.name)
    unknown = {k: v for k, v in cited.items() if k not in keys}
    assert not unknown, f"cited but not in references.bib: {unknown}"


def _static_file(relative: str) -> Path:
    """A file that html_static_path serves as _static/<relative>, or fail."""
    assert "://" not in relative, f"{relative} is loaded from the network; ship it in book/_assets"
    for folder in CONFIG["sphinx"]["config"]["html_static_path"]:
        candidate = ROOT / folder / relative
        if candidate.is_file():
            return candidate
    raise AssertionError(f"{relative} is not in any html_static_path folder; "
                         "run scripts/fetch_offline_assets.py")


def test_offline_mathjax_and_widget_assets_exist():
    config = CONFIG["sphinx"]["config"]
    mathjax = _static_file(config["mathjax_path"])
    assert mathjax.stat().st_size > 100_000 and b"MathJax" in mathjax.read_bytes()[:200_000]
    fonts = list((mathjax.parent / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) >= 20, "MathJax's CommonHTML fonts are missing"
    widget_js = [_static_file(path) for path in config["nb_ipywidgets_js"]]  # none from a CDN
    assert not widget_js, "no page needs a widget, so none should load the widget manager"


def test_widget_cells_are_left_out_of_the_pages():
    """A static page has no Python behind a slider: every cell that builds an ipywidget is
    tagged remove-output, which is why the book ships no widget manager (nb_ipywidgets_js)."""
    found = 0
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and "import ipywidgets" in source:
                found += 1
                tags = cell["metadata"].get("tags", [])
                assert "remove-output" in tags or "remove-cell" in tags, f"{path.name}: {source[:60]!r}"
    assert found >= 2, "chapters 1 and 6 have sliders"


def test_offline_assets_stay_small_and_out_of_a_root_static_folder():
    assets = ROOT / "book" / "_assets"
    total = sum(p.stat().st_size for p in assets.rglob("*") if p.is_file())
    assert total < 8e6, f"book/_assets is {total / 1e6:.1f} MB; ship only the files pages load"
    # Jupyter Book adds every .js under a root _static/ folder to every page.
    assert not (ROOT / "_static").exists(), "keep JavaScript out of a root _static/ folder"


def test_launch_buttons_and_extensions():
    assert CONFIG["execute"]["execute_notebooks"] == "cache"
    assert CONFIG["only_build_toc_files"] is True
    assert CONFIG["launch_buttons"].get("colab_url") and CONFIG["launch_buttons"].get("binderhub_url")
    assert CONFIG["repository"]["url"].startswith("https://github.com/")
    assert {"sphinx_exercise", "sphinx_togglebutton"} <= set(CONFIG["sphinx"]["extra_extensions"])


def test_hidden_folders_are_excluded_from_the_build():
    # A virtual environment such as .venv-ci holds .md and .ipynb files in site-packages;
    # Sphinx would read them and `-W` would fail on "document isn't included in any toctree".
    patterns = CONFIG["exclude_patterns"]
    assert ".*" in patterns and "**/.*" in patterns


def test_benchmarks_page_is_generated_from_the_committed_results():
    """book/benchmarks.md must be what make_benchmarks_page.py renders from benchmarks/results
    and the shipped models' JSON: rerun it after changing either."""
    import importlib.util
    path = ROOT / "benchmarks" / "make_benchmarks_page.py"
    spec = importlib.util.spec_from_file_location("make_benchmarks_page", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (ROOT / "book" / "benchmarks.md").read_text(), \
        "book/benchmarks.md is stale: run `python benchmarks/make_benchmarks_page.py`"
