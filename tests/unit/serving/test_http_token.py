"""Item 3 of issue 13: the optional bearer token, and the warning when exposed without one."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import tritonclient.http as triton
from http_helpers import DOUBLE, Raw, error_of, request

from cellpipe.serving.server import Settings, exposure_warning, start_server

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def url(make_source: Callable[[], Any]) -> Iterator[str]:
    with start_server(
        ["double", "iris@production"], make_source(), settings=Settings(token=TOKEN)
    ) as running:
        yield running.url


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v2"), ("GET", "/v2/models/double"), ("GET", "/v2/models/double/ready"),
     ("POST", "/v2/models/double/infer"), ("GET", "/v2/models/nosuch"), ("GET", "/nowhere")],
)  # fmt: skip
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"]
)
def test_item3_requests_without_the_token_are_401(
    url: str, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = httpx.request(
        method, url + path, headers=headers, content=DOUBLE if method == "POST" else None
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "bearer token" in error_of(response.content)
    assert TOKEN not in response.text


def test_item3_the_token_opens_every_endpoint(url: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=auth) as client:
        assert client.get("/v2").status_code == 200
        assert client.get("/v2/models/double").status_code == 200
        answer = client.post("/v2/models/double/infer", content=DOUBLE)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3.0, 4.0]
        # the scheme is case-insensitive (RFC 7235)
        lower = client.get("/v2", headers={"Authorization": f"bearer {TOKEN}"})
        assert lower.status_code == 200


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready"])
def test_item3_health_probes_need_no_token(url: str, path: str) -> None:
    # Kubernetes (KServe's) probes carry no token.
    assert httpx.get(url + path).status_code == 200


def test_item3_tritonclient_sends_the_token_as_a_header(url: str) -> None:
    import numpy as np

    host = url.removeprefix("http://")
    client = triton.InferenceServerClient(host)
    try:
        rows = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float64)
        given = triton.InferInput("input-0", list(rows.shape), "FP64")
        given.set_data_from_numpy(rows)
        with pytest.raises(Exception, match="bearer token"):
            client.infer("iris", [given])
        result = client.infer("iris", [given], headers={"Authorization": f"Bearer {TOKEN}"})
        assert result.as_numpy("predict").tolist() == [0]
    finally:
        client.close()


def test_item3_a_refused_chunked_upload_closes_its_connection(url: str) -> None:
    # The body was not read and has no declared end: the connection cannot carry another.
    with Raw(url) as raw:
        raw.send(
            request("POST", "/v2/models/double/infer", headers={"Transfer-Encoding": "chunked"})
        )
        raw.send(b"%x\r\n%s\r\n" % (len(DOUBLE), DOUBLE))
        status, headers, _ = raw.response()
        assert status == 401
        assert headers["connection"] == "close"
        assert raw.closed()


def test_item3_a_refused_upload_within_the_limit_keeps_its_connection(url: str) -> None:
    with Raw(url) as raw:
        raw.send(request("POST", "/v2/models/double/infer", DOUBLE))
        status, headers, _ = raw.response()
        assert status == 401
        assert "connection" not in headers
        auth = {"Authorization": f"Bearer {TOKEN}"}
        raw.send(request("POST", "/v2/models/double/infer", DOUBLE, auth))
        assert raw.response()[0] == 200


def test_item3_a_refused_get_keeps_its_connection(url: str) -> None:
    with Raw(url) as raw:
        raw.send(request("GET", "/v2/models/double"))
        assert raw.response()[0] == 401
        raw.send(request("GET", "/v2/models/double", headers={"Authorization": f"Bearer {TOKEN}"}))
        assert raw.response()[0] == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_item3_serving_beyond_loopback_without_a_token_is_warned(host: str) -> None:
    warning = exposure_warning(host, None)

    assert warning is not None
    assert "CELLPIPE_SERVE_TOKEN" in warning
    assert exposure_warning(host, "t") is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_item3_loopback_needs_no_warning(host: str) -> None:
    assert exposure_warning(host, None) is None


def test_item3_the_server_logs_the_warning(
    make_source: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    # 127.0.0.1 is loopback: no warning; the warning itself is checked on the function above
    # (binding every interface in a test would expose it).
    with (
        caplog.at_level(logging.WARNING, logger="cellpipe.serving"),
        start_server(["double"], make_source()),
    ):
        pass
    assert not [r for r in caplog.records if "without a token" in r.getMessage()]


def test_item3_help_says_the_command_line_token_is_visible_in_ps() -> None:
    import argparse

    from cellpipe.cli import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers(), [])
    text = parser._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]

    assert "CELLPIPE_SERVE_TOKEN" in text
    assert "ps" in text
