"""serve/start_server/create_app: fail fast before serving; the in-process app; lazy imports."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cellpipe.errors import ModelNotFoundError, RegistryError, ServingError
from cellpipe.serving import create_app, serve, start_server


def test_serve_fails_fast_on_a_missing_reference(make_source: Callable[[], Any]) -> None:
    source = make_source()

    with pytest.raises(ModelNotFoundError, match="no model version iris@canary"):
        serve(["iris@production", "iris@canary"], source, port=0)
    with pytest.raises(RegistryError, match="invalid model reference"):
        serve(["iris:zero"], source, port=0)
    assert source.loads == []  # nothing is loaded before every reference resolved


@pytest.mark.parametrize(
    ("refs", "message"),
    [
        ([], "no model to serve"),
        (["iris@staging", "iris@production"], "different versions of model 'iris'"),
        (["table"], "model table:1 is a builtins.dict, which cannot be served"),
        (["klass"], "model klass:1 is a class, which cannot be served"),
    ],
    ids=["nothing", "two-versions-one-name", "not-a-model", "a-class"],
)
def test_what_cannot_be_served(
    make_source: Callable[[], Any], refs: list[str], message: str
) -> None:
    source = make_source()
    source.add("table", {"a": 1})
    source.add("klass", dict)

    with pytest.raises(ServingError, match=message):
        create_app(refs, source)


def test_a_port_in_use_is_a_serving_error(make_source: Callable[[], Any]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(ServingError, match=f"port {port} on 127.0.0.1 is already in use"):
            serve(["double"], make_source(), port=port)


def test_start_server_and_stop(make_source: Callable[[], Any]) -> None:
    running = start_server(["double", "iris:1"], make_source())
    try:
        response = httpx.post(
            f"{running.url}/v2/models/double/infer",
            json={"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [4]}]},
        )
        assert response.json()["outputs"][0]["data"] == [8]
        assert httpx.get(f"{running.url}/v2/models/iris").json()["versions"] == ["1"]
    finally:
        running.stop()

    with pytest.raises(httpx.TransportError):
        httpx.get(f"{running.url}/v2/health/live", timeout=2)


def test_the_app_in_process(make_source: Callable[[], Any]) -> None:
    # httpx's ASGI transport: no port. (Starlette's TestClient now wants the httpx2 package.)
    source = make_source()
    app = create_app(["iris"], source)  # NAME alone: the newest version
    request = {
        "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [6, 3, 5, 2]}]
    }

    async def talk() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cellpipe") as http:
            return [
                await http.get("/v2/models/iris"),
                await http.get("/v2/health/ready"),
                await http.post("/v2/models/iris/infer", json=request),
            ]

    meta, ready, infer = asyncio.run(talk())

    assert meta.json()["name"] == "iris"
    assert ready.json() == {"ready": True}
    assert infer.json()["model_version"] == "2"
    assert source.loads == ["iris:2"]


def test_importing_serving_loads_no_web_stack() -> None:
    code = (
        "import sys, cellpipe, cellpipe.serving; "
        "heavy = [m for m in ('starlette', 'uvicorn', 'numpy') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert out.strip() == "[]"


def test_the_listening_socket_is_tcp_so_answers_are_not_held_back() -> None:
    """asyncio sets TCP_NODELAY on accepted connections only for an IPPROTO_TCP listener."""
    from cellpipe.serving.server import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
