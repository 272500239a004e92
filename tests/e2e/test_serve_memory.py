"""The memory proof of issue 13 (items 1 and 2): hostile requests keep `cellpipe serve` small.

A real ``cellpipe serve`` with two workers and ``--max-body 16MiB`` gets: a binary ``BYTES``
input claiming 10^8 elements in 8 bytes, a JSON input claiming a shape of 10^12 elements, a
gzip bomb (about 1 MiB that inflates to 1 GiB), a body declared at twice the limit, a chunked
body that never ends, and a body that stops arriving. Each gets its 4xx; then the peak resident
memory of every worker (``VmHWM`` in /proc/PID/status) must stay under its peak after warm-up
plus ``2 x max_body``, and the server must still answer. (README documents ``3 x max_body`` for
the worst accepted request: a compressed body near the limit, its decompressed parts and their
join. A refused bomb costs about one max_body: the inflater stops at the limit, 1 MiB a call.)
Measured here: about 1.2 x max_body, from the gzip bomb (2.1 x when one zlib call inflated up
to the limit at once). No timing is asserted: the sockets wait up to 60 s for each answer.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import CLI, iris_project

pytestmark = pytest.mark.e2e

MAX_BODY = 16 * 1024 * 1024
GOOD = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                 "data": [5.1, 3.5, 1.4, 0.2]}]}
).encode()  # fmt: skip
PATH = "/v2/models/iris/infer"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    folder = tmp_path_factory.mktemp("memory")
    iris_project(folder)
    cli = CLI
    process = subprocess.Popen(
        [*cli, "serve", "iris@production", "--port", "0", "--workers", "2", "--json",
         "--max-body", "16MiB", "--read-timeout", "1"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        text = ""
        assert process.stdout is not None
        for line in process.stdout:
            text += line
            try:
                port = int(json.loads(text)["url"].rsplit(":", 1)[1])
                break
            except ValueError:
                continue
        else:
            pytest.fail(f"the server did not start: {process.communicate()[1]}")
        yield port, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def exchange(port: int, data: bytes, *, more: Iterator[bytes] | None = None) -> tuple[int, bytes]:
    """Send ``data`` (then ``more``, until the server answers or closes); return the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(data)
        for chunk in more or ():
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, f"closed without an answer: {answer!r}"
            answer += chunk
        head, body = answer.split(b"\r\n\r\n", 1)
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )  # fmt: skip
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk
            body += chunk
        return int(head.split()[1]), body


def post(body: bytes, **headers: str) -> bytes:
    fields = {"Host": "test", "Content-Length": str(len(body)), **headers}
    head = f"POST {PATH} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode() + b"\r\n" + body


def workers(process: subprocess.Popen[str]) -> list[int]:
    pid = process.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def gzip_bomb(inflated: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    zeros = bytes(1024 * 1024)
    parts = [packer.compress(zeros) for _ in range(inflated // len(zeros))]
    return b"".join(parts) + packer.flush()


def hostile() -> list[tuple[str, bytes, Iterator[bytes] | None, tuple[int, ...]]]:
    bytes_claim = json.dumps(
        {"inputs": [{"name": "input-0", "shape": [100_000_000], "datatype": "BYTES",
                     "parameters": {"binary_data_size": 8}}]}
    ).encode()  # fmt: skip
    json_claim = json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1_000_000, 1_000_000], "datatype": "FP64",
                     "data": [1.0]}]}
    ).encode()  # fmt: skip
    bomb = gzip_bomb(1024**3)
    assert len(bomb) < MAX_BODY
    chunk = b"x" * 65536
    endless = (b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2 * MAX_BODY // len(chunk)))
    return [
        ("BYTES shape claim", post(bytes_claim + b"12345678",
                                   **{"Inference-Header-Content-Length": str(len(bytes_claim))}),
         None, (400,)),
        ("JSON shape claim", post(json_claim), None, (400,)),
        ("gzip bomb", post(bomb, **{"Content-Encoding": "gzip"}), None, (413,)),
        ("declared too big", post(b"", **{"Content-Length": str(2 * MAX_BODY)}), None, (413,)),
        ("endless chunked", f"POST {PATH} HTTP/1.1\r\nHost: test\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n".encode(), endless, (413,)),
        ("slow body", post(b"", **{"Content-Length": "1000"}) + b"x" * 10, None, (408,)),
    ]  # fmt: skip


def test_items1_2_hostile_requests_keep_resident_memory_bounded(
    server: tuple[int, subprocess.Popen[str]],
) -> None:
    port, process = server
    for _ in range(20):  # warm both workers up on good requests
        assert exchange(port, post(GOOD))[0] == 200
    pids = workers(process)
    assert len(pids) == 2
    before = {pid: peak_kib(pid) for pid in pids}

    answers: dict[str, Any] = {}
    for _ in range(2):  # twice: each worker likely gets each kind
        for name, data, more, statuses in hostile():
            status, body = exchange(port, data, more=more)
            answers[name] = (status, body[:200])
            assert status in statuses, (name, status, body[:300])
            assert "error" in json.loads(body), name

    after = {pid: peak_kib(pid) for pid in pids}
    bound_kib = 2 * MAX_BODY // 1024
    for pid in pids:
        assert after[pid] - before[pid] < bound_kib, (
            f"worker {pid}: peak resident memory grew {after[pid] - before[pid]} KiB, over "
            f"the bound of {bound_kib} KiB (2 x max_body); answers: {answers}"
        )
    assert exchange(port, post(GOOD))[0] == 200  # still serving
    assert workers(process) == pids  # no worker died or was replaced
    assert process.poll() is None
