"""Capture a few pages of a running `cellpipe ui` as PNGs (scripts/demo.sh, `make demo`).

Usage: python scripts/demo_ui_screenshots.py URL OUT_DIR FIRST_RUN LAST_RUN
URL is what ``cellpipe ui --json`` printed (with the token). Uses Debian's chromium through
Playwright's ``executable_path`` (never Playwright's own browser download); exits 3 with a note
when either is missing, so the demo can skip this part.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

PAGES = [
    ("runs", "/"),
    ("run", "/runs/{last}"),
    ("step", "/runs/{last}/steps/evaluate"),
    ("compare", "/compare?run={first}&run={last}"),
    ("lineage", "/lineage?run={last}"),
    ("models", "/models"),
    ("model", "/models/wine/1"),
    ("new-run", "/new"),
]


def main(argv: list[str]) -> int:
    """Capture the pages; 3 when the browser or Playwright is missing."""
    url, out, first, last = argv
    chromium = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: playwright is not installed (pip install -e '.[dev]')")  # noqa: T201 - a script
        return 3
    if chromium is None:
        print("skipped: chromium is not installed (apt-get install -y chromium)")  # noqa: T201 - a script
        return 3
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)  # the token becomes a cookie
            for name, path in PAGES:
                response = page.goto(base + path.format(first=first, last=last))
                if name not in ("run", "step"):  # a run page keeps its event stream open
                    page.wait_for_load_state("networkidle")
                status = response.status if response is not None else 0
                target = folder / f"{name}.png"
                page.screenshot(path=str(target), full_page=True)
                print(f"{target} ({status})")  # noqa: T201 - a script
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
