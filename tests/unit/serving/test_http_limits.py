"""Item 2 of issue 13: the body limit (enforced while reading) and the read timeouts.

A real server on loopback with a small body limit and short timeouts; each hostile client is a
raw socket, so the test controls every byte. The tests wait for the server's answer (30 s
socket timeout); none measures time.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from http_helpers import DOUBLE, Raw, error_of, request

from cellpipe.serving.server import MAX_HEADER_BYTES, Settings, start_server

LIMIT = 4096
SHORT = 0.5  # seconds: the server's timeouts here; the tests never time anything


@pytest.fixture(scope="module")
def url(make_source: Callable[[], Any]) -> Iterator[str]:
    settings = Settings(max_body=LIMIT, body_timeout=SHORT, header_timeout=SHORT)
    with start_server(["double"], make_source(), settings=settings) as running:
        yield running.url


def infer_path() -> str:
    return "/v2/models/double/infer"


def test_a_body_within_the_limit_is_served(url: str) -> None:
    with Raw(url) as raw:
        raw.send(request("POST", infer_path(), DOUBLE))
        status, _, body = raw.response()

    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == [3.0, 4.0]


def test_item2_declared_body_over_the_limit_is_413_before_it_is_sent(url: str) -> None:
    with Raw(url) as raw:
        # Only the headers: the server answers without waiting for the gigabyte.
        raw.send(request("POST", infer_path(), headers={"Content-Length": str(10**9)}))
        status, headers, body = raw.response()

        assert status == 413
        assert "4096 bytes" in error_of(body)
        assert headers["connection"] == "close"
        assert raw.closed()


def test_item2_chunked_body_is_counted_as_it_arrives(url: str) -> None:
    chunk = b"x" * 1024
    with Raw(url) as raw:
        raw.send(request("POST", infer_path(), headers={"Transfer-Encoding": "chunked"}))
        for _ in range(LIMIT // len(chunk) + 1):  # one chunk over the limit, never the end
            raw.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, headers, body = raw.response()

        assert status == 413
        assert "over this server's limit of 4096 bytes" in error_of(body)
        assert headers["connection"] == "close"
        assert raw.closed()


def test_item2_a_body_that_stops_arriving_is_408_and_closed(url: str) -> None:
    with Raw(url) as raw:
        raw.send(request("POST", infer_path(), headers={"Content-Length": "1000"}) + b"x" * 10)
        status, headers, body = raw.response()

        assert status == 408
        assert "10 bytes received" in error_of(body)
        assert headers["connection"] == "close"
        assert raw.closed()


def test_item2_headers_that_stop_arriving_are_408_and_closed(url: str) -> None:
    with Raw(url) as raw:
        raw.send(b"POST /v2/models/double/infer HTTP/1.1\r\nHost: test\r\nContent-Le")
        status, headers, body = raw.response()

        assert status == 408
        assert "headers did not arrive" in error_of(body)
        assert headers["connection"] == "close"
        assert raw.closed()


def test_item2_a_connection_that_never_speaks_is_closed(url: str) -> None:
    with Raw(url) as raw:
        assert raw.closed()
        assert raw.buffer == b""


def test_item2_headers_over_the_limit_are_431_and_closed(url: str) -> None:
    with Raw(url) as raw:
        raw.send(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n")
        raw.send(b"X-Big: " + b"a" * (MAX_HEADER_BYTES + 1024))  # never ends its line
        status, headers, body = raw.response()

        assert status == 431
        assert "headers are over" in error_of(body)
        assert headers["connection"] == "close"
        assert raw.closed()


def test_item2_the_server_still_answers_after_the_hostile_clients(url: str) -> None:
    with Raw(url) as raw:
        raw.send(request("POST", infer_path(), headers={"Content-Length": str(LIMIT + 1)}))
        assert raw.response()[0] == 413
    with Raw(url) as raw:
        raw.send(request("POST", infer_path(), DOUBLE))
        assert raw.response()[0] == 200


@pytest.mark.parametrize(
    ("text", "size"),
    [("65536", 65536), ("512KiB", 512 * 1024), ("64MiB", 64 * 1024**2), ("1GiB", 1024**3),
     ("2MB", 2_000_000), ("10 kib", 10 * 1024)],
)  # fmt: skip
def test_item2_max_body_sizes_on_the_command_line(text: str, size: int) -> None:
    from cellpipe.cli.serve import _byte_size

    assert _byte_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-5", "1.5MiB", "12XB", "MiB"])
def test_item2_bad_max_body_sizes_are_refused(text: str) -> None:
    from cellpipe.cli.serve import _byte_size

    with pytest.raises(argparse.ArgumentTypeError, match=r"size in bytes|at least 1 byte"):
        _byte_size(text)


def test_item2_a_limit_below_one_byte_is_a_serving_error() -> None:
    from cellpipe.errors import ServingError

    with pytest.raises(ServingError, match="at least 1 byte"):
        Settings(max_body=0)


def test_item2_the_app_alone_times_a_silent_body_out(
    make_source: Callable[[], Any],
) -> None:
    # Under another ASGI server (no cellpipe protocol), the app enforces the read timeout.
    import asyncio

    from cellpipe.serving.app import build_app
    from cellpipe.serving.table import ModelTable

    app = build_app(ModelTable.resolve(["double"], make_source()), body_timeout=SHORT)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        if not sent and not getattr(receive, "started", False):
            receive.started = True  # type: ignore[attr-defined]
            return {"type": "http.request", "body": b"x" * 10, "more_body": True}
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError("unreachable")

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/double/infer",
        "raw_path": b"/v2/models/double/infer",
        "headers": [(b"content-length", b"1000")],
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]

    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]  # type: ignore[operator]
    assert "10 bytes received" in error_of(sent[1]["body"])  # type: ignore[arg-type]
