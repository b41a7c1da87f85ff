"""report.html rendered by a real browser (headless Chromium): the table is there, every image decodes.

The report carries a tiny inline script that, after ``window.onload``, writes the number of
images with ``naturalWidth > 0`` to ``<body data-images-loaded>``; ``--dump-dom`` then shows
the DOM as the browser built it. Skipped only when no Chromium binary is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "chromium-browser",
              "google-chrome", "google-chrome-stable")


def _chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


def _flags(profile: Path) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={profile}"]


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium binary found (looked for /usr/bin/chromium and on PATH); "
                    "install it with `apt-get install -y chromium` to run the browser check")
    return binary


def test_browser_builds_the_headline_table_and_decodes_every_image(chromium: str, built_report: SimpleNamespace,
                                                                   tmp_path: Path) -> None:
    """In Chromium's DOM: table#headline with the methods, and images loaded == images in the page."""
    html_path = Path(built_report.paths["html"])
    n_images = html_path.read_text(encoding="utf-8").count("<img ")
    assert n_images > 0
    cmd = [chromium, *_flags(tmp_path / "profile"), "--virtual-time-budget=5000", "--dump-dom",
           html_path.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    dom = done.stdout
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    table = re.search(r'<table id="headline">(.*?)</table>', dom, re.DOTALL)
    assert table, "headline table missing from the DOM"
    assert all(m in table.group(1) for m in ("simclr", "rotation", "none"))
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images-total="(\d+)"', dom)
    assert loaded and total, "the onload image check did not run (no data-images-loaded on <body>)"
    assert int(total.group(1)) == n_images
    assert int(loaded.group(1)) == n_images, f"only {loaded.group(1)} of {n_images} images decoded"


def test_browser_screenshot_of_the_report_is_not_blank(chromium: str, built_report: SimpleNamespace,
                                                       tmp_path: Path) -> None:
    """A screenshot of the rendered page has real content (many distinct colours, not a blank page)."""
    html_path = Path(built_report.paths["html"])
    shot = tmp_path / "shot.png"
    cmd = [chromium, *_flags(tmp_path / "profile"), "--hide-scrollbars", "--window-size=1200,1600",
           "--virtual-time-budget=5000", f"--screenshot={shot}", html_path.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50
