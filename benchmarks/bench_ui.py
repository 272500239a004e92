"""Benchmark of the web UI (issue 12): the runs page with 10,000 runs in the store.

A SQLite store with N runs (default 10,000), inserted through the store API exactly as
bench_history.py does (3 parameters, 2 metrics and 5 step runs per run). The UI
(`cellpipe.ui.app.create_app`) is served by uvicorn on 127.0.0.1 in this process (a thread),
then:

- server time of ``GET /`` (the runs page: its first screen of runs, with parameters and
  metrics as columns): the wall time of the whole HTTP request over loopback from an httpx
  client holding the token cookie (warm-up, then the median of R requests);
- the same for ``/?q=accuracy > 0.95`` (a metric filter: every run is read);
- time to first paint in Chromium (Debian's, driven by Playwright): for each of R fresh
  page loads of ``/``, ``performance.getEntriesByName('first-contentful-paint')`` (measured
  from the navigation's start, so it includes the server time) and the page's load event.

The issue's target: the first screen in under 0.3 s (server time and first paint).

Run: ``.venv/bin/python benchmarks/bench_ui.py [--runs N] [--repeats R] [--no-write]``;
results go to its section of RESULTS.md. Needs Debian's chromium for the paint timings (they
are left out, and said so, without it).
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _results import RESULTS, write_section
from bench_history import build_store

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.3


def ms(value: float) -> str:
    return f"{value * 1000:.0f}"


class Server:
    """The UI under uvicorn in a thread, on a free 127.0.0.1 port."""

    def __init__(self, project: Path, token: str) -> None:
        import uvicorn

        from cellpipe.ui.app import create_app

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(project, token=token), log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SystemExit("the UI server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def server_times(base: str, token: str, path: str, repeats: int) -> list[float]:
    import httpx

    with httpx.Client(base_url=base, timeout=60) as client:
        client.get(f"/?token={token}")  # sets the cookie
        client.get(path).raise_for_status()  # warm-up
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            response = client.get(path)
            samples.append(time.perf_counter() - start)
            response.raise_for_status()
    return samples


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def paint_times(base: str, token: str, repeats: int) -> tuple[list[float], list[float], int]:
    """First contentful paint and load event of ``/`` (seconds), and the rows on screen."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    assert executable is not None
    fcp: list[float] = []
    load: list[float] = []
    rows = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(f"{base}/?token={token}")  # the cookie, and a warm-up load
            page.close()
            page = context.new_page()
            for _ in range(repeats):
                page.goto("about:blank")
                page.goto(f"{base}/", wait_until="load")
                page.wait_for_function(
                    "() => performance.getEntriesByName('first-contentful-paint').length > 0",
                    timeout=30_000,
                )
                fcp.append(
                    page.evaluate(
                        "() => performance.getEntriesByName('first-contentful-paint')[0].startTime"
                    )
                    / 1000
                )
                load.append(
                    page.evaluate(
                        "() => { const n = performance.getEntriesByType('navigation')[0];"
                        " return n.loadEventEnd - n.startTime; }"
                    )
                    / 1000
                )
                rows = page.locator("main table tbody tr").count()
            page.close()
            context.close()
        finally:
            browser.close()
    return fcp, load, rows


def verdict(seconds: float) -> str:
    return "yes" if seconds < TARGET_S else "**no**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the store")
    parser.add_argument("--repeats", type=int, default=20, help="timed requests / page loads")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        project = Path(tmp) / "project"
        (project / ".cellpipe" / "artifacts").mkdir(parents=True)
        print(f"inserting {args.runs} runs through the store API ...", flush=True)
        took = build_store(project / ".cellpipe" / "cellpipe.db", args.runs)
        print(f"  {took:.1f} s", flush=True)
        rows: list[list[str]] = []
        with Server(project, token) as server:
            page_bytes = 0
            for label, path in (
                ("server time of `GET /` (the runs page, first screen)", "/"),
                (
                    "server time of `GET /?q=accuracy > 0.95` (a metric filter)",
                    "/?q=accuracy+>+0.95",
                ),
            ):
                samples = server_times(server.base, token, path, args.repeats)
                median = statistics.median(samples)
                rows.append([label, ms(min(samples)), ms(median), "< 300", verdict(median)])
                print(f"  {label}: best {ms(min(samples))} ms, median {ms(median)} ms")
            import httpx

            with httpx.Client(base_url=server.base) as client:
                client.get(f"/?token={token}")
                page_bytes = len(client.get("/").content)
            screen_rows = 0
            if chromium() is None:
                note = "Chromium is not installed: no paint timings (apt-get install chromium)."
            else:
                fcp, load, screen_rows = paint_times(server.base, token, max(5, args.repeats // 2))
                for label, samples in (
                    ("first contentful paint of `/` in Chromium (from navigation start)", fcp),
                    ("load event of `/` in Chromium (from navigation start)", load),
                ):
                    median = statistics.median(samples)
                    rows.append([label, ms(min(samples)), ms(median), "< 300", verdict(median)])
                    print(f"  {label}: best {ms(min(samples))} ms, median {ms(median)} ms")
                note = (
                    f"{len(fcp)} loads of `/` in one tab (after about:blank each; one warm-up "
                    "first), headless "
                    f"Debian Chromium through Playwright; the page has {screen_rows} rows."
                )
    load_after = os.getloadavg()[0]
    lines = [
        "## The web UI's runs page with 10,000 runs (`benchmarks/bench_ui.py`)",
        "",
        f"{args.runs} runs in a SQLite store (inserted in {took:.1f} s through the store API, "
        "as in bench_history); the UI served by uvicorn in the benchmark's process; "
        f"{args.repeats} timed requests after a warm-up; the page is {page_bytes / 1024:.0f} KiB. "
        f"{note} {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {load_before:.2f} before, "
        f"{load_after:.2f} after (other engineers share the machine).",
        "",
        "| case | best (ms) | median (ms) | target (ms) | met |",
        "|---|---:|---:|---:|:---:|",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    section = "\n".join(lines)
    print()
    print(section)
    if not args.no_write:
        write_section("bench_ui", section)
        print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
