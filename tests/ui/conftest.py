"""Fixtures for the web UI tests (issue 12): a project with finished runs, a live server, Chromium.

- ``ui_project``: a copy of the bundled wine example with two finished runs (different
  parameters, so metrics differ) and a registered model ``wine`` (two versions, alias
  ``production`` moved from 1 to 2), session-scoped. ``UI_RUNS`` holds the run ids.
- ``ui_server(project)``: starts `cellpipe.ui.app.create_app` under uvicorn in a thread on
  127.0.0.1 (a free port) and returns its URL with the token (a `UiUrl`: ``str(url)`` is
  ``http://127.0.0.1:PORT/?token=T``; ``url.to("/runs/X")`` adds the token to any path;
  ``url.base``/``url.token``). Every server is stopped after the test. ``ui_url`` is the
  server of ``ui_project``.
- ``browser`` (per module) / ``page`` (per test): Playwright's sync API driving Debian's Chromium
  (``executable_path``; Playwright's own browser download is never used). A missing Playwright
  or Chromium skips with "is not installed" (a failure under CI=true, see tests/ci_skips.py).
- ``shots``: ``build/test-screenshots/<test name>/``, where a test saves its screenshots.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_helpers import UiRuns, UiUrl, chromium_path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "build" / "test-screenshots"
STARTUP_TIMEOUT_S = 60.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/ui carries the ``ui`` marker (``pytest -m "not ui"`` skips them)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.ui)


# -- the project -------------------------------------------------------------------------------


def _src_dir() -> str:
    import cellpipe

    return str(Path(cellpipe.__file__).resolve().parents[1])


def _cli_run(folder: Path, *params: str) -> str:
    """Run ``cellpipe run wine.ipynb --json -p ...`` in ``folder``; return the run id."""
    env = dict(os.environ, PYTHONPATH=_src_dir())
    args = [sys.executable, "-m", "cellpipe", "run", "wine.ipynb", "--json"]
    for p in params:
        args += ["-p", p]
    done = subprocess.run(
        args, cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for line in done.stdout.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("run_id"):
                return str(event["run_id"])
    raise AssertionError(f"no run id in the output of {args}:\n{done.stdout[-4000:]}")


@pytest.fixture(scope="session")
def ui_project_and_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, UiRuns]:
    from cellpipe import api

    folder = tmp_path_factory.mktemp("ui") / "wine"
    shutil.copytree(
        REPO_ROOT / "examples" / "wine", folder, ignore=shutil.ignore_patterns(".cellpipe")
    )
    first = _cli_run(folder)
    second = _cli_run(folder, "MAX_DEPTH=1", "TEST_SIZE=0.5", "C=0.01")
    api.register_run_output(first, "train_forest", "forest", "wine", project=folder)
    api.register_run_output(
        second, "train_logreg", "logreg", "wine", alias="production", project=folder
    )
    api.move_alias("wine", "production", 1, project=folder)
    api.move_alias("wine", "production", 2, project=folder)
    return folder, UiRuns(first=first, second=second)


@pytest.fixture(scope="session")
def ui_project(ui_project_and_runs: tuple[Path, UiRuns]) -> Path:
    """The project folder (a copy of examples/wine) with two finished runs and a model.

    Session-scoped: tests must not change it (start runs in a project of their own).
    """
    return ui_project_and_runs[0]


@pytest.fixture(scope="session")
def ui_runs(ui_project_and_runs: tuple[Path, UiRuns]) -> UiRuns:
    """The run ids of ``ui_project`` (``first`` with the defaults, ``second`` with others)."""
    return ui_project_and_runs[1]


# -- the server --------------------------------------------------------------------------------


class _ServerThread:
    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the UI server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if self.thread.is_alive():  # e.g. an SSE stream that does not end: force it
            self.server.force_exit = True
            self.thread.join(timeout=30)
        self.sock.close()


UiServer = Callable[..., UiUrl]


@pytest.fixture
def ui_server() -> Iterator[UiServer]:
    """``ui_server(project)`` starts the UI of ``project`` and returns its `UiUrl`."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    started: list[_ServerThread] = []

    def start(project: Path | str | None, *, token: str | None = None) -> UiUrl:
        from cellpipe.ui.app import create_app

        token = token or secrets.token_urlsafe(24)
        server = _ServerThread(create_app(project, token=token))
        started.append(server)
        server.start()
        return UiUrl(f"http://127.0.0.1:{server.port}", token)

    try:
        yield start
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture
def ui_url(ui_server: UiServer, ui_project: Path) -> UiUrl:
    """The running UI of ``ui_project``."""
    return ui_server(ui_project)


# -- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's) driven by Playwright's sync API, for one test module.

    Not for the whole session: while Playwright's sync API runs, its event loop holds the
    main thread (``asyncio.run`` fails there) and its greenlets upset Python 3.11's parser
    (``pytester`` runs fail with "AST constructor recursion depth mismatch"); stopping it
    after each module keeps the tests that follow in the same worker unaffected.
    """
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    if executable is None:
        message = (
            "chromium is not installed (apt-get install -y chromium, or `make test` as root; "
            "Playwright's own browser download is not used)"
        )
        from ci_skips import in_ci

        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"], headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page in a fresh browser context (own cookies), closed after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    """``build/test-screenshots/<test>/``: where the test saves its screenshots."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    folder = SCREENSHOTS / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
