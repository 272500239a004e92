"""`cellpipe ui` end to end: a real process, used, linked by `show`, stopped by Ctrl-C."""

from __future__ import annotations

import http.cookiejar
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import cellpipe
from cellpipe.ui.server import is_loopback
from ui_fake_project import FakeRun, make_project

pytestmark = pytest.mark.e2e

START_TIMEOUT_S = 120.0


def _read_json(process: subprocess.Popen[str]) -> dict[str, str]:
    """Read stdout until it holds one whole JSON document (the process prints it once started).

    Reads the pipe's bytes directly (a text wrapper's buffer would hide them from select).
    """
    assert process.stdout is not None
    fd = process.stdout.fileno()
    data = b""
    deadline = time.monotonic() + START_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=1.0):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
            try:
                return dict(json.loads(data.decode()))
            except ValueError:
                continue
    raise AssertionError(f"`cellpipe ui --json` printed no JSON document: {data!r}")


def test_cellpipe_ui_serves_until_ctrl_c(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path, [FakeRun("train-1")])
    env = dict(os.environ, PYTHONPATH=str(Path(cellpipe.__file__).resolve().parents[1]))
    process = subprocess.Popen(
        [sys.executable, "-m", "cellpipe", "ui", "--project", str(project), "--port", "0",
         "--json", "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        url = _read_json(process)["url"]
        assert url.startswith("http://127.0.0.1:")
        assert "?token=" in url
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(url, timeout=60) as response:
            page = response.read().decode()
            assert response.status == 200
            assert "token=" not in response.url  # redirected to the URL without it
        assert "train-1" in page
        rebound = urllib.request.Request(url, headers={"Host": "rebound.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(rebound, timeout=60)
        assert refused.value.code == 403  # a loopback UI answers only to loopback names
        refused.value.close()
        state = json.loads((project / ".cellpipe" / "ui.json").read_text())
        assert state == {"url": url, "pid": process.pid}

        shown = run_cli("show", "train-1", "--project", project)
        base = url.split("/?", 1)[0]
        token = url.split("?token=", 1)[1]
        assert f"in the web UI: {base}/runs/train-1?token={token}" in shown.out

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert not (project / ".cellpipe" / "ui.json").exists()
        assert "in the web UI" not in run_cli("show", "train-1", "--project", project).out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        process.stderr.close()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.org", False)],
)  # fmt: skip
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_host_other_than_loopback_is_warned_about(tmp_path: Path) -> None:
    make_project(tmp_path, [])
    env = dict(os.environ, PYTHONPATH=str(Path(cellpipe.__file__).resolve().parents[1]))
    process = subprocess.Popen(
        [sys.executable, "-m", "cellpipe", "ui", "--project", str(tmp_path), "--host",
         "0.0.0.0", "--port", "0", "--json", "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        url = _read_json(process)["url"]
        assert url.startswith("http://127.0.0.1:")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        assert "warning: listening on 0.0.0.0" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        process.stderr.close()


def test_outside_a_project_it_fails_at_once(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("ui", "--project", tmp_path, "--no-browser")
    assert result.code == 1
    assert "no cellpipe project" in result.err
