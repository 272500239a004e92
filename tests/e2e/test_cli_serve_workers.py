"""`cellpipe serve` as a real command with pre-forked workers (issue 13: items 3, 9, 12 and
the Performance section's workers): the real port announced, the token from the environment,
workers supervised (one killed is replaced), every child gone after SIGTERM, the gRPC API in a
process of its own, access logs at info, IPv6 URLs.

Each server is a real subprocess; the tests poll with generous deadlines and never time
anything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from serve_helpers import iris_project

pytestmark = pytest.mark.e2e

ROW = [5.1, 3.5, 1.4, 0.2]
REQUEST = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
).encode()
TOKEN = "worker-test-token"
DEADLINE = 90.0


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    return iris_project(folder)


class Served:
    """A `cellpipe serve` subprocess and what it announced."""

    def __init__(
        self,
        project: Path,
        *args: str,
        env: dict[str, str] | None = None,
        sigint_ignored: bool = False,
    ) -> None:
        command = [sys.executable, "-c", "from cellpipe.cli.main import entry; entry()",
                   "serve", "iris@production", "--port", "0", *args]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            # As bash starts `cellpipe serve ... &` from a script: SIGINT ignored.
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
            if sigint_ignored
            else None,
        )
        self.err = ""

    def announced_json(self) -> dict[str, Any]:
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        text = ""
        for line in stdout:
            text += line
            try:
                document: dict[str, Any] = json.loads(text)
                return document
            except ValueError:
                continue
        pytest.fail(f"the server ended before announcing: {self.stop()}")

    def announced_text(self) -> str:
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        line = stdout.readline()
        assert line, self.stop()
        return line

    def children(self) -> set[int]:
        pid = self.process.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except FileNotFoundError:
            return set()
        return {int(p) for p in text.split()}

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, self.err = self.process.communicate(timeout=60)
        return self.err


@pytest.fixture
def serve(project: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None, **options: Any) -> Served:
        served = Served(project, *args, env=env, **options)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def call(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            if call(f"{url}/v2/health/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} never became ready")


def poll(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_item9_port_zero_is_announced_and_workers_share_it(serve: Any) -> None:
    served = serve("--workers", "2", "--json", env={"CELLPIPE_SERVE_TOKEN": TOKEN})
    announced = served.announced_json()
    url = announced["url"]

    assert url.startswith("http://127.0.0.1:")
    assert not url.endswith(":0")
    assert (announced["workers"], announced["token"], announced["grpc"]) == (2, True, None)
    wait_ready(url)
    poll(lambda: len(served.children()) == 2, "two worker processes")
    infer = f"{url}/v2/models/iris/infer"
    assert call(infer, REQUEST)[0] == 401  # item 3: the token came from the environment
    status, answer, _ = call(infer, REQUEST, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, answer
    assert answer["outputs"][0]["data"] == [0]
    assert TOKEN not in " ".join(served.process.args)  # never on the command line


def test_a_killed_worker_is_reported_and_replaced_and_sigterm_ends_every_child(
    serve: Any,
) -> None:
    served = serve("--workers", "2", "--json")
    url = served.announced_json()["url"]
    wait_ready(url)
    poll(lambda: len(served.children()) == 2, "two worker processes")
    first = served.children()
    victim = min(first)

    os.kill(victim, signal.SIGKILL)
    poll(lambda: len(served.children()) == 2 and victim not in served.children(), "a new worker")
    for _ in range(20):  # whichever worker answers, each one serves
        assert call(f"{url}/v2/models/iris/infer", REQUEST)[0] == 200
    children = served.children()

    err = served.stop()
    assert served.process.returncode == 0, err
    assert f"(pid {victim}) was killed by signal 9 (SIGKILL); started it again" in err
    assert not [pid for pid in children if alive(pid)]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigint_stops_a_server_started_in_the_background_of_a_script(
    serve: Any, workers: str
) -> None:
    # `cellpipe serve ... &` in a bash script starts with SIGINT ignored; `kill -INT` (and
    # Ctrl-C) must still stop it and every process it started, with exit status 0.
    served = serve("--workers", workers, "--grpc-port", "0", "--json", sigint_ignored=True)
    url = served.announced_json()["url"]
    wait_ready(url)
    if workers == "2":
        poll(lambda: len(served.children()) == 3, "two workers and the gRPC process")
    children = served.children()
    served.process.send_signal(signal.SIGINT)
    _, err = served.process.communicate(timeout=60)
    assert served.process.returncode == 0, err
    assert not [pid for pid in children if alive(pid)]


def test_item12_grpc_runs_in_its_own_process_beside_the_workers(serve: Any) -> None:
    import numpy as np
    import tritonclient.grpc as triton_grpc

    served = serve("--workers", "2", "--grpc-port", "0", "--json")
    announced = served.announced_json()
    address = announced["grpc"]
    assert address.startswith("127.0.0.1:")
    assert not address.endswith(":0")
    wait_ready(announced["url"])
    poll(lambda: len(served.children()) == 3, "two workers and the gRPC process")
    client = triton_grpc.InferenceServerClient(address)
    try:
        assert client.is_server_live()
        given = triton_grpc.InferInput("input-0", [1, 4], "FP64")
        given.set_data_from_numpy(np.array([ROW], dtype=np.float64))
        result = client.infer("iris", [given])
        assert result.as_numpy("output-0").tolist() == [0]
    finally:
        client.close()
    children = served.children()
    assert served.stop() is not None
    assert served.process.returncode == 0, served.err
    assert not [pid for pid in children if alive(pid)]


def test_item9_log_level_info_logs_each_request(serve: Any) -> None:
    served = serve("--workers", "1", "--log-level", "info", "--json")
    url = served.announced_json()["url"]
    wait_ready(url)
    status, _, headers = call(f"{url}/v2/models/iris/infer", REQUEST, {"X-Request-ID": "abc-123"})
    assert status == 200
    assert headers["x-request-id"] == "abc-123"

    err = served.stop()
    assert "POST /v2/models/iris/infer 200 " in err
    assert "ms abc-123" in err


def test_item9_default_log_level_logs_no_requests(serve: Any) -> None:
    served = serve("--workers", "1", "--json")
    url = served.announced_json()["url"]
    wait_ready(url)
    assert call(f"{url}/v2/models/iris/infer", REQUEST)[0] == 200

    err = served.stop()
    assert "/v2/models/iris/infer" not in err


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_item9_ipv6_urls_are_bracketed(serve: Any) -> None:
    served = serve("--host", "::1", "--workers", "1")
    line = served.announced_text()

    assert " at http://[::1]:" in line
    url = line.split(" at ", 1)[1].split("/v2/", 1)[0]
    wait_ready(url)
    served.stop()
    assert served.process.returncode == 0, served.err


def test_item3_help_warns_that_a_command_line_token_shows_in_ps(project: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from cellpipe.cli.main import entry; entry()", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "CELLPIPE_SERVE_TOKEN" in result.stdout
    assert "`ps`" in result.stdout
