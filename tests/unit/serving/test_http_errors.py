"""Items 4 and 9 of issue 13 (the HTTP half): every request error is a 4xx JSON ``{"error"}``
and leaves the keep-alive connection usable (or says ``Connection: close``); 405 carries
``Allow``; request ids; the access log; IPv6 URLs; the real port."""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from http_helpers import DOUBLE, Raw, error_of, request

from cellpipe.serving.server import start_server, url_of


@pytest.fixture(scope="module")
def url(make_source: Callable[[], Any]) -> Iterator[str]:
    with start_server(["double", "iris@production"], make_source()) as running:
        yield running.url


def deep(levels: int) -> bytes:
    return b'{"inputs": ' + b"[" * levels + b"]" * levels + b"}"


# (method, path, body, headers, status): each a client mistake.
MISTAKES = [
    ("GET", "/nowhere", b"", {}, 404),
    ("GET", "/v2/models", b"", {}, 404),
    ("GET", "/v2/models/double/versions", b"", {}, 404),
    ("GET", "/v2/models/double/versions/1/nothing", b"", {}, 404),
    ("GET", "/v2/models/nosuch", b"", {}, 404),
    ("POST", "/v2/models/nosuch/infer", DOUBLE, {}, 404),
    ("GET", "/v2/models/double/infer", b"", {}, 405),
    ("POST", "/v2/models/double", DOUBLE, {}, 405),
    ("DELETE", "/v2/health/live", b"", {}, 405),
    ("POST", "/v2/models/double/infer", b"{not json", {}, 400),
    ("POST", "/v2/models/double/infer", b"[1, 2]", {}, 400),
    ("POST", "/v2/models/double/infer", deep(5000), {}, 400),
    ("POST", "/v2/models/double/infer", DOUBLE, {"Inference-Header-Content-Length": "x"}, 400),
    ("POST", "/v2/models/double/infer", DOUBLE, {"Content-Encoding": "br"}, 415),
    ("POST", "/v2/models/double/infer", b"\x1f\x8b broken", {"Content-Encoding": "gzip"}, 400),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    MISTAKES,
    ids=[f"{m[0]}-{m[1]}-{m[4]}-{i}" for i, m in enumerate(MISTAKES)],
)
def test_item4_an_error_then_a_good_request_on_one_connection(
    url: str, method: str, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    port = int(url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        assert response.status == status, payload
        assert response.getheader("content-type") == "application/json"
        error_of(payload)
        if response.getheader("connection") == "close":
            return  # said so: a new connection is the client's job
        connection.request("POST", "/v2/models/double/infer", body=DOUBLE)
        good = connection.getresponse()
        assert good.status == 200, good.read()
        assert json.loads(good.read())["outputs"][0]["data"] == [3.0, 4.0]
    finally:
        connection.close()


def test_item4_errors_on_a_connection_keep_it_alive(url: str) -> None:
    # None of the mistakes above needs the connection closed: the body was read.
    with Raw(url) as raw:
        for method, path, body, headers, status in MISTAKES:
            raw.send(request(method, path, body, headers))
            got, answer_headers, payload = raw.response()
            assert got == status, (path, payload)
            assert "connection" not in answer_headers, (path, answer_headers)
        raw.send(request("POST", "/v2/models/double/infer", DOUBLE))
        assert raw.response()[0] == 200


def test_item4_nesting_too_deep_is_a_400_not_a_500(url: str) -> None:
    with Raw(url) as raw:
        raw.send(request("POST", "/v2/models/double/infer", deep(5000)))
        status, _, body = raw.response()

    assert status == 400
    assert "nest" in error_of(body).lower() or "depth" in error_of(body).lower()


@pytest.mark.parametrize(
    "raw_request",
    [
        b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\nBroken header line\r\n\r\n",
        b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\nContent-Length: abc\r\n\r\n",
        b"NOT-HTTP\r\n\r\n",
        b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab",
    ],
    ids=["no-colon", "bad-length", "garbage", "two-lengths"],
)
def test_item4_malformed_requests_are_json_400_and_closed(url: str, raw_request: bytes) -> None:
    with Raw(url) as raw:
        raw.send(raw_request)
        status, headers, body = raw.response()

        assert status == 400
        assert headers["content-type"] == "application/json"
        assert "invalid HTTP request" in error_of(body)
        assert headers["connection"] == "close"
        assert raw.closed()


def test_item4_a_404_for_an_unknown_route_names_the_route(url: str) -> None:
    with Raw(url) as raw:
        raw.send(request("GET", "/v3/whatever"))
        status, _, body = raw.response()

    assert status == 404
    assert error_of(body) == "no such endpoint: GET /v3/whatever"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v2/models/double/infer", "POST"),
        ("PUT", "/v2/models/double/versions/1/infer", "POST"),
        ("POST", "/v2/models/double", "GET, HEAD"),
        ("POST", "/v2/health/ready", "GET, HEAD"),
        ("PATCH", "/v2", "GET, HEAD"),
    ],
)
def test_item9_405_says_which_methods_are_allowed(
    url: str, method: str, path: str, allow: str
) -> None:
    with Raw(url) as raw:
        raw.send(request(method, path))
        status, headers, body = raw.response()

    assert status == 405
    assert headers["allow"] == allow
    assert allow in error_of(body)


def test_head_answers_like_get_without_a_body(url: str) -> None:
    with Raw(url) as raw:
        raw.send(request("GET", "/v2/models/double"))
        get_body = raw.response()[2]
        raw.send(request("HEAD", "/v2/models/double"))
        raw.sock.settimeout(30)
        while b"\r\n\r\n" not in raw.buffer:
            assert raw._fill()
        head = raw.buffer.decode("latin-1")

    assert head.startswith("HTTP/1.1 200")
    assert f"content-length: {len(get_body)}" in head
    assert head.endswith("\r\n\r\n")  # and nothing after the headers


def test_item9_a_request_id_is_echoed(url: str) -> None:
    with Raw(url) as raw:
        raw.send(request("GET", "/v2/health/live", headers={"X-Request-ID": "trace-42.a:b/c"}))
        assert raw.response()[1]["x-request-id"] == "trace-42.a:b/c"


@pytest.mark.parametrize("sent", [None, "bad id with spaces", "x" * 300, "é"])
def test_item9_a_request_id_is_generated_when_absent_or_unusable(
    url: str, sent: str | None
) -> None:
    headers = {} if sent is None else {"X-Request-ID": sent}
    with Raw(url) as raw:
        raw.send(request("GET", "/v2/nowhere", headers=headers))
        first = raw.response()[1]["x-request-id"]
        raw.send(request("GET", "/v2/nowhere", headers=headers))
        second = raw.response()[1]["x-request-id"]

    assert re.fullmatch("[0-9a-f]{32}", first)
    assert first != second


def test_item9_info_logs_each_request_and_warning_none(
    make_source: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cellpipe.serving.access")
    with (
        start_server(["double"], make_source(), log_level="info") as running,
        Raw(running.url) as raw,
    ):
        raw.send(request("POST", "/v2/models/double/infer", DOUBLE, {"X-Request-ID": "req-7"}))
        assert raw.response()[0] == 200
        raw.send(request("GET", "/v2/models/nosuch%0aFAKE%20200"))
        assert raw.response()[0] == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "cellpipe.serving.access"]

    assert len(lines) == 2, lines
    assert re.fullmatch(r"POST /v2/models/double/infer 200 [0-9.]+ms req-7", lines[0])
    # The raw (percent-encoded) path: a client cannot forge a log line.
    assert re.fullmatch(r"GET /v2/models/nosuch%0aFAKE%20200 404 [0-9.]+ms [0-9a-f]{32}", lines[1])

    caplog.clear()
    with (
        start_server(["double"], make_source(), log_level="warning") as running,
        Raw(running.url) as raw,
    ):
        raw.send(request("POST", "/v2/models/double/infer", DOUBLE))
        assert raw.response()[0] == 200
    assert not [r for r in caplog.records if r.name == "cellpipe.serving.access"]


def test_item9_urls_of_ipv6_hosts_are_bracketed() -> None:
    assert url_of("::1", 8080) == "http://[::1]:8080"
    assert url_of("[::1]", 8080) == "http://[::1]:8080"
    assert url_of("127.0.0.1", 0) == "http://127.0.0.1:0"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_item9_a_server_on_ipv6_loopback(make_source: Callable[[], Any]) -> None:
    with start_server(["double"], make_source(), host="::1") as running:
        assert running.url == f"http://[::1]:{running.port}"
        assert running.port != 0
        with Raw(running.url) as raw:
            raw.send(request("POST", "/v2/models/double/infer", DOUBLE))
            assert raw.response()[0] == 200


def test_item9_port_zero_gives_the_real_port(make_source: Callable[[], Any]) -> None:
    with start_server(["double"], make_source(), port=0) as running:
        assert running.port != 0
        with Raw(running.url) as raw:
            raw.send(request("GET", "/v2/health/ready"))
            assert raw.response()[0] == 200
