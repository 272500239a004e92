"""A running `cellpipe serve` follows alias moves (item 10) and counts them in /metrics (item 11).

The real command in its own process (with its worker processes), the real `cellpipe models
alias` command moving the alias, and plain HTTP. No timing: polls with generous deadlines.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import cellpipe

pytestmark = pytest.mark.e2e

DEADLINE_S = 90.0
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 4.9, 1.5]]
FLAT = [v for row in ROWS for v in row]
REQUEST = {
    "inputs": [{"name": "input-0", "shape": [4, 4], "datatype": "FP64", "data": FLAT}],
    "outputs": [{"name": "predict_proba"}],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(url: str, document: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = None if document is None else json.dumps(document).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _json(url: str, document: dict[str, Any] | None = None) -> tuple[int, Any]:
    status, body = _call(url, document)
    return status, json.loads(body)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with iris:1 (production) and iris:2 (different predictions), iris:3 a dict."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path / "iris"
    (folder / ".cellpipe").mkdir(parents=True)
    x, y = load_iris(return_X_y=True)
    strong = LogisticRegression(max_iter=2000).fit(x, y)
    weak = LogisticRegression(C=0.01, max_iter=2000).fit(x, y)
    cellpipe.register_model(weak, "iris", input_example=x[:5], alias="production", project=folder)
    cellpipe.register_model(strong, "iris", input_example=x[:5], project=folder)
    cellpipe.register_model({"weights": [1, 2]}, "iris", project=folder)  # cannot be served
    return folder


@pytest.fixture
def server(project: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", "from cellpipe.cli.main import entry; entry()",
               "serve", "iris@production", "--port", str(port), "--log-level", "info"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                if _call(f"{base}/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield base, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


def _answers(base: str, version: str, times: int) -> list[Any]:
    """Infer until ``times`` answers in a row come from ``version``; return them."""
    deadline = time.monotonic() + DEADLINE_S
    streak: list[Any] = []
    while len(streak) < times:
        assert time.monotonic() < deadline, f"version {version} was not served in time"
        status, answer = _json(f"{base}/v2/models/iris/infer", REQUEST)
        assert status == 200, answer
        streak = [*streak, answer] if answer["model_version"] == version else []
        if not streak:
            time.sleep(0.05)
    return streak


def _metric(body: bytes, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_item10_a_running_server_follows_an_alias_move(
    project: Path, server: tuple[str, subprocess.Popen[str]], run_cli: Any
) -> None:
    base, process = server
    models = [cellpipe.load_model(f"iris:{n}", project=project) for n in (1, 2)]
    expected = [m.predict_proba(np.array(ROWS)).ravel().tolist() for m in models]
    assert expected[0] != expected[1]

    before = _answers(base, "1", 1)[0]
    moved = run_cli("models", "alias", "iris", "production", "2", "--project", project)
    assert moved.code == 0, moved.err
    after = _answers(base, "2", 10)

    assert before["outputs"][0]["data"] == pytest.approx(expected[0])
    assert all(a["outputs"][0]["data"] == pytest.approx(expected[1]) for a in after)
    assert _json(f"{base}/v2/models/iris")[1]["versions"] == ["2"]
    assert _json(f"{base}/v2/models/iris/versions/1/infer", REQUEST)[0] == 404
    deadline = time.monotonic() + DEADLINE_S
    while True:  # the first worker counts the move once it has switched (it polls too)
        status, body = _call(f"{base}/metrics")
        assert status == 200
        switches = _metric(body, "cellpipe_model_switches_total", model="iris")
        if switches is not None:
            break
        assert time.monotonic() < deadline, "the move was not counted in time"
        time.sleep(0.1)
    # Every process follows; one move is counted once, not once per worker process.
    assert switches == 1
    assert _metric(body, "cellpipe_model_version", model="iris") == 2
    served = _metric(
        body, "cellpipe_requests_total", model="iris", version="2", protocol="rest", status="200"
    )
    assert served is not None
    assert served >= 10

    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert "iris@production moved from version 1 to 2: now serving iris:2" in err


def test_item10_a_move_to_a_version_that_cannot_be_served_keeps_the_old_one(
    project: Path, server: tuple[str, subprocess.Popen[str]], run_cli: Any
) -> None:
    base, _ = server

    moved = run_cli("models", "alias", "iris", "production", "3", "--project", project)
    assert moved.code == 0, moved.err
    deadline = time.monotonic() + DEADLINE_S
    while True:
        status, metadata = _json(f"{base}/v2/models/iris")
        assert status == 200, metadata
        if "properties" in metadata:
            break
        assert time.monotonic() < deadline, "the failed move was not reported"
        time.sleep(0.1)

    reason = metadata["properties"]["reason"]
    assert metadata["properties"]["ready"] == "true"
    assert reason.startswith("iris@production names version 3, which cannot be served")
    assert reason.endswith("still serving version 1")
    assert _json(f"{base}/v2/models/iris/ready")[1]["ready"] is True
    assert _answers(base, "1", 3)[0]["model_name"] == "iris"
