"""Screenshot the built book's pages with headless Chromium, served from 127.0.0.1 only.

Serves ``_build/html`` with Python's http.server on a free loopback port and takes one
full-height screenshot per chapter page, so a person can check that the math renders and
that figures and animation players show. Chromium runs with networking features off and
a fresh profile, so what renders is what an offline reader gets. Needs Chromium
(``apt-get install -y chromium`` on Debian/Ubuntu).

    python scripts/screenshot_book.py                    # every page in the toc
    python scripts/screenshot_book.py --pages book/01_forward_process --out shots/
"""
from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def toc_pages(toc_path: Path) -> list[str]:
    """The toc's files in reading order (without extension)."""
    toc = yaml.safe_load(toc_path.read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        pages += [c["file"] for c in part.get("chapters", [])]
    return pages


def find_browser() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no Chromium found: install it (e.g. apt-get install -y chromium) and run again.")


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    """Serve ``directory`` on 127.0.0.1 at a free port, in a daemon thread."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        if args and str(args[1]) not in {"200", "304"}:
            sys.stderr.write(f"  [server] {format % args}\n")


def screenshot(browser: str, url: str, out: Path, width: int, height: int, wait_ms: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--no-first-run", "--disable-sync", "--disable-extensions",
               "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}",
               f"--screenshot={out}", url]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="built book (default _build/html)")
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml")
    parser.add_argument("--pages", nargs="*", help="pages to shoot, e.g. book/01_forward_process (default: the toc)")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--wait-ms", type=int, default=8000, help="virtual time for scripts (MathJax) to finish")
    args = parser.parse_args()
    if not (args.html / "index.html").exists():
        sys.exit(f"{args.html} has no index.html: build the book first (jupyter-book build .).")
    browser = find_browser()
    pages = args.pages or toc_pages(args.toc)
    args.out.mkdir(parents=True, exist_ok=True)
    server, port = serve(args.html)
    try:
        for page in pages:
            if not (args.html / f"{page}.html").exists():
                print(f"skip {page}: not built")
                continue
            out = args.out / f"{Path(page).name}.png"
            screenshot(browser, f"http://127.0.0.1:{port}/{page}.html", out,
                       args.width, args.height, args.wait_ms)
            print(f"{page} -> {out}")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
