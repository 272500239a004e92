"""The ASGI app of the Open Inference Protocol v2 REST API (plain ASGI, no framework).

Owns: `build_app` / `create_app`, the routes of the protocol and the HTTP rules around them:

    GET  /v2/health/live                                  {"live": true}
    GET  /v2/health/ready                                 {"ready": true}
    GET  /v2                                              server metadata
    GET  /v2/models/NAME[/versions/N]                     model metadata
    GET  /v2/models/NAME[/versions/N]/ready               {"name", "ready"}
    POST /v2/models/NAME[/versions/N]/infer               inference (JSON or binary data)
    GET  /metrics                                         Prometheus metrics (when enabled)

the body limit (a declared ``Content-Length`` over it is refused with 413 before a byte is
read; a chunked body is counted as it arrives), the body read timeout (408), the optional
bearer token (401 with ``WWW-Authenticate: Bearer``; the health endpoints stay open for
probes), request ids (``X-Request-ID`` echoed, or generated) and the access log.

Invariants: every response is JSON; every error is ``{"error": "..."}`` with a 4xx status
for anything the client did (400 bad request, 401 token, 404 unknown route/model/version,
405 wrong method with ``Allow``, 408 body too slow, 413 body too big) and 500 only for a
server fault. A response sent before the whole body was read says ``Connection: close``;
every other error leaves the keep-alive connection usable. Nothing is logged per request
unless the access log is on.

Must not depend on: the runner, kfp, notebooks, config or api. Imported only when a server or
app is built (`cellpipe.serving` imports it lazily).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from cellpipe.errors import ServingError
from cellpipe.registry.model import ModelSource
from cellpipe.serving.codec import dumps
from cellpipe.serving.protocol import DEFAULT_MAX_BODY, ServedModel, infer, server_version
from cellpipe.serving.table import ModelTable
from cellpipe.serving.tensors import RequestError

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "EXTENSIONS",
    "ModelTable",
    "build_app",
    "create_app",
    "error_body",
]

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("cellpipe.serving.access")

EXTENSIONS = ("binary_tensor_data",)
"""The protocol extensions this server supports (reported by ``GET /v2``)."""

DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a request body may stay silent between two reads before the request gets 408.

nginx's ``client_body_timeout`` semantic: the time between two successive reads, not the
whole transfer, so a large body on a slow but live link still arrives."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _dumps(document: Any) -> bytes:
    return dumps(document)


def error_body(message: str) -> bytes:
    """Return the JSON body ``{"error": message}`` of an error response."""
    return _dumps({"error": message})


_JSON = b"application/json"
_READ = b"GET, HEAD"
_WRITE = b"POST"
_BEARER = b"bearer "
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")
"""An ``X-Request-ID`` echoed as sent; anything else (control characters, long) is replaced."""

# Route kinds.
_LIVE, _READY, _SERVER, _METADATA, _MODEL_READY, _INFER, _METRICS = range(7)
_OPEN = (_LIVE, _READY)
"""Routes answered without a token: Kubernetes probes (KServe's too) carry none."""


def _route(path: str, metrics: bool) -> tuple[int, str, str | None] | None:
    """Return (kind, model name, version segment) of ``path``, None for an unknown path."""
    if path == "/v2/health/live":
        return _LIVE, "", None
    if path == "/v2/health/ready":
        return _READY, "", None
    if path in ("/v2", "/v2/"):
        return _SERVER, "", None
    if path == "/metrics" and metrics:
        return _METRICS, "", None
    parts = path.split("/")
    if len(parts) < 4 or parts[1] != "v2" or parts[2] != "models" or not parts[3]:
        return None
    name, rest, version = parts[3], parts[4:], None
    if len(rest) >= 2 and rest[0] == "versions":
        version, rest = rest[1], rest[2:]
        if not version:
            return None
    if not rest:
        return _METADATA, name, version
    if len(rest) == 1 and rest[0] == "ready":
        return _MODEL_READY, name, version
    if len(rest) == 1 and rest[0] == "infer":
        return _INFER, name, version
    return None


class _Reply(Exception):
    """A refusal decided by the HTTP layer (405, 408, 413, 401) with its extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)
        self.close = close


class _Disconnected(Exception):
    pass


def _shown(path: str) -> str:
    """``path`` for an error message: printable, and short."""
    text = path if path.isprintable() else repr(path)
    return text if len(text) <= 200 else text[:200] + "..."


class OipApp:
    """The ASGI application of `build_app` (one per server process)."""

    def __init__(
        self,
        table: Any,
        *,
        token: str | None,
        max_body: int,
        metrics: Any,
        access_log: bool,
        body_timeout: float | None,
        inline: bool,
    ) -> None:
        if max_body < 1:
            raise ServingError(f"the body limit must be at least 1 byte, not {max_body}")
        if body_timeout is not None and not body_timeout > 0:
            raise ServingError(f"the body timeout must be positive, not {body_timeout}")
        self.table = table
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.metrics = metrics
        self.access_log = access_log
        self.inline = inline
        self._token = token.encode() if token else None
        self._server = _dumps(
            {"name": "cellpipe", "version": server_version(), "extensions": list(EXTENSIONS)}
        )
        self._live = _dumps({"live": True})
        self._ready = _dumps({"ready": True})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        started = time.perf_counter()
        length = auth = request_id = header_length = encoding = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = value
            elif key == b"authorization":
                auth = value
            elif key == b"x-request-id":
                request_id = value
            elif key == b"inference-header-content-length":
                header_length = value
            elif key == b"content-encoding":
                encoding = value
            elif key == b"transfer-encoding":
                length = b"chunked"
        if request_id is None or _REQUEST_ID.fullmatch(request_id) is None:
            request_id = os.urandom(16).hex().encode()
        headers: list[tuple[bytes, bytes]] = []
        content_type = _JSON
        close = False
        try:
            status, body, content_type, headers = await self._dispatch(
                scope, receive, length, auth, header_length, encoding
            )
        except _Disconnected:
            return
        except _Reply as reply:
            status, body, headers, close = (
                reply.status,
                error_body(reply.message),
                reply.headers,
                reply.close,
            )
        except RequestError as exc:
            message = f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message
            status, body = exc.status, error_body(message)
        except RecursionError:
            status, body = 400, error_body("the request is nested too deeply")
        except Exception as exc:
            logger.exception("internal error on %s %s", scope["method"], _shown(scope["path"]))
            status = 500
            body = error_body(f"internal server error ({type(exc).__name__}); see the server log")
        response = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id),
            *headers,
        ]
        if close:
            response.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": response})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
        if self.access_log:
            access_logger.info(
                "%s %s %d %.2fms %s",
                scope["method"],
                scope.get("raw_path", b"").decode("ascii", "backslashreplace")
                or _shown(scope["path"]),
                status,
                (time.perf_counter() - started) * 1000,
                request_id.decode("ascii"),
            )

    async def _dispatch(
        self,
        scope: Scope,
        receive: Receive,
        length: bytes | None,
        auth: bytes | None,
        header_length: bytes | None,
        encoding: bytes | None,
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        path: str = scope["path"]
        method: str = scope["method"]
        route = _route(path, self.metrics is not None)
        # Refused before its body was read: uvicorn drains a declared body within the limit
        # and keeps the connection; a chunked or oversized one closes it instead.
        unread = length is not None and (length == b"chunked" or int(length) > self.max_body)
        open_route = route is not None and route[0] in _OPEN
        if self._token is not None and not open_route and not self._authorized(auth):
            raise _Reply(
                401,
                "this server needs a bearer token (header 'Authorization: Bearer TOKEN')",
                headers=[(b"www-authenticate", b'Bearer realm="cellpipe"')],
                close=unread,
            )
        if route is None:
            raise _Reply(404, f"no such endpoint: {method} {_shown(path)}", close=unread)
        kind, name, version = route
        allow = _WRITE if kind == _INFER else _READ
        if method not in (("POST",) if kind == _INFER else ("GET", "HEAD")):
            raise _Reply(
                405,
                f"Method Not Allowed: {method} on {_shown(path)}; use {allow.decode()}",
                headers=[(b"allow", allow)],
                close=unread,
            )
        if kind == _INFER:
            return await self._infer(receive, name, version, length, header_length, encoding)
        if kind == _LIVE:
            return 200, self._live, _JSON, []
        if kind == _READY:
            return 200, self._ready, _JSON, []
        if kind == _SERVER:
            return 200, self._server, _JSON, []
        if kind == _METRICS:
            content, media = await self._call(self.metrics.render)
            return 200, content, media.encode(), []
        if kind == _METADATA:
            return 200, _dumps(await self._call(self._metadata, name, version)), _JSON, []
        return 200, _dumps(await self._call(self._readiness, name, version)), _JSON, []

    def _authorized(self, auth: bytes | None) -> bool:
        assert self._token is not None
        if auth is None or auth[:7].lower() != _BEARER:
            return False
        return hmac.compare_digest(auth[7:].strip(), self._token)

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        # Metadata may load a version on first use, metrics read the workers' files: never
        # on the event loop (only inference of a served name runs there, see `_infer`).
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    def _metadata(self, name: str, version: str | None) -> dict[str, Any]:
        document: dict[str, Any] = self.table.metadata(name, version)
        return document

    def _readiness(self, name: str, version: str | None) -> dict[str, Any]:
        # The reason of an unready version is in its metadata (``properties``): the OIP
        # readiness document has just these two fields.
        ready, _ = self.table.readiness(name, version)
        return {"name": name, "ready": ready}

    async def _infer(
        self,
        receive: Receive,
        name: str,
        version: str | None,
        length: bytes | None,
        header_length: bytes | None,
        encoding: bytes | None,
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        if length is not None and length != b"chunked":
            declared = int(length)  # the HTTP parser accepted it: digits only
            if declared > self.max_body:
                raise _Reply(
                    413,
                    f"the body is {declared} bytes, over this server's limit of "
                    f"{self.max_body} bytes (serve --max-body)",
                    close=True,
                )
        body = await self._read_body(receive)
        hlen = None if header_length is None else header_length.decode("latin-1")
        enc = None if encoding is None else encoding.decode("latin-1").strip().lower()
        if self.inline and version is None:
            content, headers = self._answer(name, version, body, hlen, enc)
        else:  # a version segment may load its model on first use: never on the event loop
            content, headers = await asyncio.get_running_loop().run_in_executor(
                None, self._answer, name, version, body, hlen, enc
            )
        extra = [(k.encode(), v.encode()) for k, v in headers.items() if k != "content-type"]
        return 200, content, headers.get("content-type", "application/json").encode(), extra

    def _answer(
        self,
        name: str,
        version: str | None,
        body: bytes,
        header_length: str | None,
        encoding: str | None,
    ) -> tuple[bytes, dict[str, str]]:
        model = self.table.get(name, version)
        if self.metrics is None:
            return self._infer_one(model, body, header_length, encoding)
        with self.metrics.track(name, str(model.version.version), "rest") as done:
            try:
                answer = self._infer_one(model, body, header_length, encoding)
            except RequestError as exc:
                done(exc.status)
                raise
            except BaseException:
                done(500)
                raise
            done(200)
            return answer

    def _infer_one(
        self, model: ServedModel, body: bytes, header_length: str | None, encoding: str | None
    ) -> tuple[bytes, dict[str, str]]:
        return infer(
            model,
            body,
            header_length=header_length,
            content_encoding=encoding,
            max_body=self.max_body,
        )

    async def _read_body(self, receive: Receive) -> bytes:
        limit, timeout = self.max_body, self.body_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            if timeout is None:  # the server's protocol enforces the read timeout
                message = await receive()
            else:
                try:
                    async with asyncio.timeout(timeout):
                        message = await receive()
                except TimeoutError:
                    raise _Reply(
                        408,
                        f"the request body stopped arriving: nothing for {timeout:g} s "
                        f"({size} bytes received)",
                        close=True,
                    ) from None
            if message["type"] != "http.request":
                raise _Disconnected
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _Reply(
                        413,
                        f"the body is over this server's limit of {limit} bytes (serve --max-body)",
                        close=True,
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def build_app(
    table: Any,
    *,
    token: str | None = None,
    max_body: int | None = None,
    metrics: Any = None,
    access_log: bool = False,
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
    inline: bool = False,
) -> OipApp:
    """Return the ASGI app serving the versions of ``table``.

    Args:
        table: the `ModelTable` to serve.
        token: when set, every request but the health probes needs
            ``Authorization: Bearer TOKEN`` (compared in constant time).
        max_body: the largest request body accepted, in bytes, before and after
            decompression (default `protocol.DEFAULT_MAX_BODY`).
        metrics: a `Metrics` to count requests in and serve at ``/metrics``; None: no metrics.
        access_log: log one line per request (method, path, status, latency, request id)
            to the ``cellpipe.serving.access`` logger at INFO.
        body_timeout: seconds a body may stay silent between two reads before 408; None
            when the server enforces it (`cellpipe.serving.server` does, in its protocol).
        inline: run inference on the event loop instead of the thread pool.

    Raises:
        ServingError: a limit is not positive.
    """
    return OipApp(
        table,
        token=token,
        max_body=DEFAULT_MAX_BODY if max_body is None else max_body,
        metrics=metrics,
        access_log=access_log,
        body_timeout=body_timeout,
        inline=inline,
    )


def create_app(refs: Sequence[str], source: ModelSource, **options: Any) -> OipApp:
    """Resolve and load ``refs`` from ``source`` and return the ASGI app serving them.

    Args:
        refs: model references (``NAME``, ``NAME:N``, ``NAME@ALIAS``); each name is served at
            ``/v2/models/NAME`` (the resolved version).
        source: the registry (any `ModelSource`).
        options: as `build_app`.

    Raises:
        RegistryError: a reference is invalid or missing.
        ServingError: a model cannot be served.
    """
    return build_app(ModelTable.resolve(refs, source), **options)
