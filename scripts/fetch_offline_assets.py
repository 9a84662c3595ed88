"""(Re)create book/_assets: the JavaScript the built book needs, so it reads offline.

By default a Jupyter Book page loads MathJax from a CDN (and, on pages that show
ipywidgets, require.js and the widget manager; the book shows none: every widget cell is
tagged remove-output, see _config.yml). This script downloads pinned releases from the npm registry with
``npm pack`` (npm must be installed), keeps only the files the pages load, and writes
them under ``book/_assets`` (served as a Sphinx static path; see ``_config.yml``):

    book/_assets/mathjax/tex-chtml-full.js           TeX input + CommonHTML output, all TeX extensions
    book/_assets/mathjax/output/chtml/fonts/woff-v2  the fonts CommonHTML output asks for

Run from the repository root:  python scripts/fetch_offline_assets.py
The result is committed, so a fresh clone builds offline without running this script.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "book" / "_assets"

# package spec -> list of (glob inside the package, destination folder relative to DEST)
PACKAGES = {
    "mathjax@3.2.2": [
        ("es5/tex-chtml-full.js", "mathjax"),
        ("es5/output/chtml/fonts/woff-v2/*.woff", "mathjax/output/chtml/fonts/woff-v2"),
        ("LICENSE", "mathjax"),
    ],
}

NOTICE = """Offline copies of the JavaScript the built book loads (instead of CDNs).
Created by scripts/fetch_offline_assets.py from the npm registry; do not edit by hand.

mathjax 3.2.2                          Apache-2.0 (mathjax/LICENSE)
"""


def npm_pack(spec: str, workdir: Path) -> Path:
    """Download ``spec`` with ``npm pack`` into ``workdir`` and unpack it; return the package dir."""
    if shutil.which("npm") is None:
        sys.exit("npm not found: install Node.js (which ships npm) and run this script again.")
    out = subprocess.run(["npm", "pack", spec, "--silent"], cwd=workdir, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    unpack = workdir / out.replace(".tgz", "")
    with tarfile.open(workdir / out) as tar:
        try:
            tar.extractall(unpack, filter="data")   # refuses links and paths outside unpack
        except TypeError:                           # Python without extraction filters
            tar.extractall(unpack)
    return unpack / "package"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEST, help="output folder (default: book/_assets)")
    args = parser.parse_args()
    dest: Path = args.dest
    with tempfile.TemporaryDirectory() as tmp:
        for spec, files in PACKAGES.items():
            pkg = npm_pack(spec, Path(tmp))
            for pattern, sub in files:
                matches = sorted(pkg.glob(pattern))
                if not matches:
                    sys.exit(f"{spec}: no file matches {pattern!r}; the pinned version changed its layout.")
                target = dest / sub
                target.mkdir(parents=True, exist_ok=True)
                for path in matches:
                    shutil.copy2(path, target / path.name)
    (dest / "NOTICE.txt").write_text(NOTICE)
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"wrote {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}: {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
