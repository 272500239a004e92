"""The ASGI app of the Open Inference Protocol v2 REST API (Starlette).

Owns: `create_app` / `build_app`, the routes of the protocol over a `ModelTable`
(`cellpipe.serving.table`):

    GET  /v2/health/live                                  {"live": true}
    GET  /v2/health/ready                                 {"ready": true}
    GET  /v2                                              server metadata
    GET  /v2/models/NAME[/versions/N]                     model metadata
    GET  /v2/models/NAME[/versions/N]/ready               {"name", "ready"}
    POST /v2/models/NAME[/versions/N]/infer               inference (JSON or binary data)

Invariants: every error is JSON ``{"error": "..."}``: 400 for a bad request, 404 for an unknown
route, model or version, 405 for a wrong method, 500 when the model raised. Loading and
inference run in a worker thread, never on the event loop; loads are serialised by a lock, so
a version is loaded once.

Must not depend on: the runner, kfp or notebooks. Starlette is imported here only, and this
module only when a server or app is built (`cellpipe.serving` imports it lazily).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cellpipe.registry.model import ModelSource
from cellpipe.serving.protocol import ServedModel, infer
from cellpipe.serving.table import ModelTable
from cellpipe.serving.tensors import RequestError

__all__ = ["EXTENSIONS", "ModelTable", "build_app", "create_app"]

logger = logging.getLogger(__name__)

EXTENSIONS = ("binary_tensor_data",)
"""The protocol extensions this server supports (reported by ``GET /v2``)."""


def _cellpipe_version() -> str:
    # Not `cellpipe.__version__`: importing the package root links serving to the api layer.
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("cellpipe")
    except PackageNotFoundError:
        return "0+unknown"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def build_app(table: ModelTable) -> Starlette:
    """Return the ASGI app serving the versions of ``table``."""
    version = _cellpipe_version()

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        # Every resolved version was loaded before the app was built.
        return _json({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return _json({"name": "cellpipe", "version": version, "extensions": list(EXTENSIONS)})

    def lookup(request: Request) -> ServedModel:
        params = request.path_params
        return table.get(params["name"], params.get("version"))

    async def metadata(request: Request) -> Response:
        params = request.path_params
        document = await run_in_threadpool(table.metadata, params["name"], params.get("version"))
        return _json(document)

    async def model_ready(request: Request) -> Response:
        params = request.path_params
        ready, _ = await run_in_threadpool(table.readiness, params["name"], params.get("version"))
        return _json({"name": params["name"], "ready": ready})

    async def inference(request: Request) -> Response:
        body = await request.body()
        header_length = request.headers.get("inference-header-content-length")
        encoding = request.headers.get("content-encoding")

        def work() -> tuple[bytes, dict[str, str]]:
            model = lookup(request)
            return infer(model, body, header_length=header_length, content_encoding=encoding)

        content, headers = await run_in_threadpool(work)
        return Response(content, headers=headers)

    async def request_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        message = f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message
        return _error(message, exc.status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return _error(f"no such endpoint: {request.method} {request.url.path}", 404)
        return _error(str(exc.detail), exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return _error(f"internal server error: {type(exc).__name__}: {exc}", 500)

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/", server_metadata, methods=["GET"]),
        Route(model, metadata, methods=["GET"]),
        Route(versioned, metadata, methods=["GET"]),
        Route(model + "/ready", model_ready, methods=["GET"]),
        Route(versioned + "/ready", model_ready, methods=["GET"]),
        Route(model + "/infer", inference, methods=["POST"]),
        Route(versioned + "/infer", inference, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            RequestError: request_error,
            HTTPException: http_error,
            Exception: server_error,
        },
    )


def create_app(refs: Sequence[str], source: ModelSource) -> Starlette:
    """Resolve and load ``refs`` from ``source`` and return the ASGI app serving them.

    Args:
        refs: model references (``NAME``, ``NAME:N``, ``NAME@ALIAS``); each name is served at
            ``/v2/models/NAME`` (the resolved version) and ``/v2/models/NAME/versions/N``.
        source: the registry (any `ModelSource`).

    Raises:
        RegistryError: a reference is invalid or missing.
        ServingError: a model cannot be served.
    """
    return build_app(ModelTable.resolve(refs, source))
