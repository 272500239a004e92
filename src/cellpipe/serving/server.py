"""Running the model server: `serve` in the foreground, `start_server` in a background thread.

Owns: resolving and loading every reference before the port is opened (a missing model fails
fast with a `CellpipeError`), binding the socket ourselves (a port in use is a `ServingError`
naming it, not uvicorn's exit; ``port=0`` announces the real port), the HTTP connection rules
uvicorn does not enforce by itself (a header timeout and a header size limit: see
`_protocol_class`), and running uvicorn on the socket: in this process, or in ``workers``
pre-forked processes sharing it (`cellpipe.serving.workers`), with the gRPC server in a
process of its own.

Invariants: nothing is served until every reference resolved and loaded; the parent of
pre-forked workers never starts a thread or imports grpc before it forks; `start_server`
returns only once the server answers on its socket, and `RunningServer.stop` waits for it to
end. Every HTTP-level refusal (malformed request, headers too slow or too big) is a JSON
``{"error"}`` with ``Connection: close``.

Must not depend on: the runner, kfp, notebooks, config or api. uvicorn loads only when a
server starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cellpipe.errors import ServingError
from cellpipe.registry.model import ModelSource
from cellpipe.serving.protocol import DEFAULT_MAX_BODY

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "MAX_HEADER_BYTES",
    "Addresses",
    "RunningServer",
    "Settings",
    "default_workers",
    "exposure_warning",
    "serve",
    "start_server",
    "url_of",
]

logger = logging.getLogger("cellpipe.serving")

DEFAULT_HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a request's headers once it sent its first byte, and to send
anything at all on a new connection (uvicorn has no such timeout: a slow-headers client held a
connection forever)."""

MAX_HEADER_BYTES = 64 * 1024
"""The request line and headers of one request, at most (431 above)."""

KEEP_ALIVE_TIMEOUT = 5
"""Seconds an idle keep-alive connection is kept (uvicorn's default)."""


def default_workers() -> int:
    """The default number of worker processes: the usable CPUs, at most 4 (1 without fork)."""
    if not hasattr(os, "fork"):
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """How a server answers: its limits, token and logging (the same in every worker).

    Attributes:
        token: when set, every request but the health probes needs ``Authorization: Bearer``.
        max_body: the largest request body, in bytes, as sent and once decompressed.
        body_timeout: seconds a request body may stay silent between two reads (408).
        header_timeout: seconds to send the request line and headers (408).
        log_level: ``info`` or ``debug`` log every request (the access log); ``warning``
            and above log none.
        all_versions: expose every version of each served name at ``/versions/N``.
        inline: run inference on the event loop (see README, "Limits, tokens and workers").
    """

    token: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    body_timeout: float = 30.0
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    log_level: str = "warning"
    all_versions: bool = False
    inline: bool = True

    def __post_init__(self) -> None:
        if self.max_body < 1:
            raise ServingError(
                f"the body limit must be at least 1 byte, not {self.max_body}",
                hint="pass --max-body BYTES (default 64 MiB)",
            )
        for what, value in (("body", self.body_timeout), ("header", self.header_timeout)):
            if not value > 0:
                raise ServingError(f"the {what} timeout must be positive, not {value}")

    @property
    def access_log(self) -> bool:
        """Whether each request is logged (log level info or debug)."""
        return self.log_level in ("info", "debug", "trace")


def url_of(host: str, port: int) -> str:
    """The base URL of a server on ``host``:``port`` (IPv6 addresses in brackets)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def exposure_warning(host: str, token: str | None) -> str | None:
    """Return a warning when ``host`` is reachable beyond this machine without a token."""
    if token:
        return None
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"serving on {host} without a token: anyone who can reach this machine can call the "
        "models; set CELLPIPE_SERVE_TOKEN (clients send 'Authorization: Bearer TOKEN') or "
        "bind --host 127.0.0.1"
    )


def _bind(host: str, port: int) -> socket.socket:
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on for accepted connections only when the
    # listening socket says TCP. Without it, a keep-alive client (tritonclient, requests
    # sessions) waited about 40 ms per request for a delayed ACK between headers and body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bare, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServingError(
                f"port {port} on {host} is already in use", hint="choose another port"
            ) from exc
        raise ServingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _protocol_class(settings: Settings) -> type[Any]:
    """Return uvicorn's httptools protocol with header timeout and size limit, and JSON errors.

    uvicorn (0.29-0.54) arms its keep-alive timer only after a response and cancels it on any
    received byte, so a client that sends nothing, or a header a byte at a time, held a
    connection forever; httptools buffers a header of any size. Here the time from a
    connection's first byte (or from its opening) to the end of the headers is bounded by
    ``header_timeout`` (408), the header bytes by `MAX_HEADER_BYTES` (431), the silence within
    a body by ``body_timeout`` (408; a timer armed only when a read leaves the body incomplete,
    so a request that arrives whole costs nothing: an ``asyncio.timeout`` around the app's
    reads cost about 15 times a plain read), and uvicorn's plain-text "Invalid HTTP request"
    400 becomes JSON. Each of these closes the connection.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from cellpipe.serving.app import error_body

    timeout = settings.header_timeout
    body_timeout = settings.body_timeout
    limit = MAX_HEADER_BYTES

    class Protocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes: int | None = 0  # None: the headers of the current request are read
        _body_timer: asyncio.TimerHandle | None = None
        _body_bytes = 0
        _in_body = False  # the headers were read, the body is not complete

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            self._cancel_body_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._header_bytes is not None:
                self._header_bytes += len(data)
            super().data_received(data)
            if self.transport.is_closing():
                return
            if self._header_bytes is not None and self._header_bytes > limit:
                self._refuse(431, f"the request line and headers are over {limit} bytes")
            elif self._in_body:
                # A body that came in with its headers never gets here: no timer, no cost.
                self._cancel_body_timer()
                self._body_timer = self.loop.call_later(body_timeout, self._body_too_slow)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_bytes is None:
                self._header_bytes = 0
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

        def on_headers_complete(self) -> None:
            self._header_bytes = None
            self._cancel_header_timer()
            self._in_body, self._body_bytes = True, 0
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._body_bytes += len(body)
            super().on_body(body)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._header_bytes = 0  # what comes next is the next request's head
            self._in_body = False
            self._cancel_body_timer()

        def send_400_response(self, msg: str) -> None:
            self._refuse(400, f"invalid HTTP request: {msg}")

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _cancel_body_timer(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _body_too_slow(self) -> None:
            self._body_timer = None
            if not self._in_body or self.transport.is_closing():
                return
            if self.cycle is not None and self.cycle.response_started:
                self.transport.close()  # answered already (a 413, a 401): just stop reading
                return
            self._refuse(
                408,
                f"the request body stopped arriving: nothing for {body_timeout:g} s "
                f"({self._body_bytes} bytes received)",
            )

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self._header_bytes is None or self.transport.is_closing():
                return
            if self._header_bytes == 0:
                self.transport.close()  # a connection that never said anything
                return
            self._refuse(408, f"the request headers did not arrive within {timeout:g} s")

        def _refuse(self, status: int, message: str) -> None:
            body = error_body(message)
            reason = {400: b"Bad Request", 408: b"Request Timeout"}.get(
                status, b"Request Header Fields Too Large"
            )
            head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
            self.transport.write(
                head + b"content-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
            )
            self.transport.close()

    return Protocol


def _uvicorn(app: Any, settings: Settings) -> Any:
    import uvicorn

    try:
        protocol: Any = _protocol_class(settings)
    except ImportError:  # no httptools: h11, with its own header limit
        protocol = "h11"
    config = uvicorn.Config(
        app,
        http=protocol,
        log_level=settings.log_level,
        lifespan="off",
        access_log=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
    return uvicorn.Server(config)


def _access_logging(settings: Settings) -> None:
    """Send the access log to stderr when it is on and nothing else handles it."""
    if not settings.access_log:
        return
    # The server's own INFO lines too: alias switches and versions loaded on first use.
    logging.getLogger("cellpipe.serving").setLevel(logging.INFO)
    access = logging.getLogger("cellpipe.serving.access")
    access.setLevel(logging.INFO)
    if not access.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access.addHandler(handler)
        access.propagate = False


def _table(refs: Sequence[str], source: ModelSource, settings: Settings) -> Any:
    # Loaded here: the web stack is an optional extra and `import cellpipe` stays fast.
    try:
        import uvicorn  # noqa: F401

        from cellpipe.serving.table import ModelTable
    except ImportError as exc:
        raise ServingError(
            f"the model server needs the 'serve' extra ({exc.name} is missing)",
            hint="pip install 'cellpipe[serve]'",
        ) from exc
    return ModelTable.resolve(refs, source, all_versions=settings.all_versions)


def _app(table: Any, settings: Settings, metrics: Any) -> Any:
    from cellpipe.serving.app import build_app

    try:
        import httptools  # noqa: F401

        body_timeout = None  # `_protocol_class` enforces it, at no cost per request
    except ImportError:
        body_timeout = settings.body_timeout
    return build_app(
        table,
        token=settings.token,
        max_body=settings.max_body,
        metrics=metrics,
        access_log=settings.access_log,
        body_timeout=body_timeout,
        inline=settings.inline,
    )


def _metrics(table: Any, multiprocess_dir: str | None) -> Any:
    from cellpipe.serving.metrics import Metrics

    metrics = Metrics.create(multiprocess_dir)
    for name, model in table.defaults.items():
        metrics.serving(name, model.version.version)
    return metrics


def _start_following(
    table: Any,
    metrics: Any,
    follow: Callable[[], ModelSource] | None,
    interval: float,
    *,
    count_switches: bool = True,
) -> None:
    """Follow the table's aliases in this process (with a source of its own after a fork).

    Every process follows on its own; with several, only one (``count_switches``) counts the
    moves, so ``cellpipe_model_switches_total`` is the number of moves, not moves x processes.
    The others still report the version they serve.
    """
    source = None
    if follow is not None:
        source = follow()
        table.source = source  # versions loaded on first use come from it too

    def served(switch: Any) -> None:
        metrics.serving(switch.name, switch.version)

    on_switch = metrics.switched if count_switches else served
    table.start_following(source, interval=interval, on_switch=on_switch)


def _grpc(table: Any, host: str, port: int, settings: Settings, metrics: Any) -> Any:
    from cellpipe.serving.grpc import start_grpc_server

    return start_grpc_server(
        table,
        host=host,
        port=port,
        token=settings.token,
        metrics=metrics,
        max_message_bytes=settings.max_body,
    )


@dataclass(frozen=True, slots=True)
class Addresses:
    """Where a started server listens: the REST base URL and the gRPC ``host:port``."""

    url: str
    grpc: str | None = None


def serve(
    refs: Sequence[str],
    source: ModelSource,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    settings: Settings | None = None,
    workers: int = 1,
    grpc_port: int | None = None,
    follow: Callable[[], ModelSource] | None = None,
    follow_interval: float = 1.0,
    announce: Callable[[Addresses], None] | None = None,
) -> None:
    """Serve model versions over the Open Inference Protocol v2 until interrupted.

    Every reference is resolved and its object loaded first; then the port is opened,
    ``announce`` gets the real addresses, and uvicorn runs until Ctrl-C or SIGTERM: in this
    process when ``workers`` is 1, else in ``workers`` forked processes sharing the socket
    (the models are loaded once, before the fork), each following the aliases with a source
    of its own and counting into shared Prometheus files (``GET /metrics`` sums them). The
    gRPC API runs in a thread (one process) or in a process of its own (workers).

    Args:
        refs: model references: ``NAME`` (newest), ``NAME:N``, ``NAME@ALIAS``.
        source: the registry to resolve and load from.
        host: the address to listen on (``0.0.0.0`` or ``::`` for every interface).
        port: the TCP port (0: any free port, announced).
        settings: limits, token and log level (`Settings` defaults).
        workers: the number of HTTP server processes.
        grpc_port: also serve the gRPC API on this port (0: any free port); None: no gRPC.
        follow: opens a fresh source for a worker process (forked processes must not share
            the parent's database connections); None: one process uses ``source``.
        follow_interval: seconds between two polls of the followed references.
        announce: receives the addresses once the ports are open, before serving.

    Raises:
        RegistryError: a reference is invalid or names no version (`ModelNotFoundError`).
        ServingError: a model cannot be served, the serve extra is missing, a port cannot
            be opened, or a worker process fails as it starts.
    """
    settings = settings or Settings()
    if workers < 1:
        raise ServingError(f"--workers must be at least 1, not {workers}")
    if workers > 1 and not hasattr(os, "fork"):
        raise ServingError(
            f"{workers} worker processes need os.fork, which this platform lacks",
            hint="serve with --workers 1",
        )
    table = _table(refs, source, settings)
    warning = exposure_warning(host, settings.token)
    if warning:
        logger.warning("%s", warning)
    _access_logging(settings)
    sock = _bind(host, port)
    url = url_of(host, sock.getsockname()[1])
    try:
        if workers == 1:
            _serve_here(table, sock, url, host, grpc_port, settings, follow_interval, announce)
        else:
            _serve_forked(
                table, sock, url, host, workers, grpc_port, settings, follow, follow_interval,
                announce,
            )  # fmt: skip
    finally:
        sock.close()


def _serve_here(
    table: Any,
    sock: socket.socket,
    url: str,
    host: str,
    grpc_port: int | None,
    settings: Settings,
    interval: float,
    announce: Callable[[Addresses], None] | None,
) -> None:
    import signal

    metrics = _metrics(table, None)
    grpc = None if grpc_port is None else _grpc(table, host, grpc_port, settings, metrics)
    main = threading.current_thread() is threading.main_thread()
    # SIGTERM stops the server like Ctrl-C (uvicorn raises it again once it has shut down).
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        _start_following(table, metrics, None, interval)
        if announce is not None:
            announce(Addresses(url, None if grpc is None else grpc.address))
        _uvicorn(_app(table, settings, metrics), settings).run(sockets=[sock])
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        table.stop_following()
        if grpc is not None:
            grpc.stop()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _serve_forked(
    table: Any,
    sock: socket.socket,
    url: str,
    host: str,
    workers: int,
    grpc_port: int | None,
    settings: Settings,
    follow: Callable[[], ModelSource] | None,
    interval: float,
    announce: Callable[[Addresses], None] | None,
) -> None:
    import shutil
    import tempfile

    from cellpipe.serving.metrics import MULTIPROC_ENV, mark_process_dead
    from cellpipe.serving.workers import Supervisor

    folder = tempfile.mkdtemp(prefix="cellpipe-metrics-")
    # Before anything imports prometheus_client: the children count into files there.
    os.environ[MULTIPROC_ENV] = folder

    def worker(number: int) -> Callable[[], None]:
        def run() -> None:
            metrics = _metrics(table, folder)
            _start_following(table, metrics, follow, interval, count_switches=number == 1)
            _uvicorn(_app(table, settings, metrics), settings).run(sockets=[sock])

        return run

    def grpc_process(report: int) -> Callable[[], None]:
        def run() -> None:
            sock.close()
            metrics = _metrics(table, folder)
            _start_following(table, metrics, follow, interval, count_switches=False)
            server = _grpc(table, host, grpc_port or 0, settings, metrics)
            os.write(report, f"{server.port}\n".encode())
            os.close(report)
            _wait_for_stop()
            server.stop()

        return run

    supervisor = Supervisor(on_exit=lambda pid: mark_process_dead(pid, folder))
    try:
        for number in range(1, workers + 1):
            supervisor.spawn(f"worker {number}", worker(number))
        grpc_address = None
        if grpc_port is not None:
            read, write = os.pipe()
            supervisor.spawn("the gRPC server", grpc_process(write), restartable=grpc_port != 0)
            os.close(write)
            with os.fdopen(read) as reply:
                line = reply.readline().strip()
            if not line.isdigit():
                raise ServingError(
                    "the gRPC server did not start", hint="its error is above this message"
                )
            grpc_address = f"{url_of(host, int(line)).removeprefix('http://')}"
        if announce is not None:
            announce(Addresses(url, grpc_address))
        supervisor.supervise()
    finally:
        supervisor.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_stop() -> None:
    """Block until SIGTERM or SIGINT (in a forked child's main thread)."""
    import signal

    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop.wait(3600):
        pass


@dataclass(slots=True, kw_only=True)
class RunningServer:
    """A server running in a background thread (see `start_server`)."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread
    _socket: socket.socket
    table: Any = field(default=None)
    metrics: Any = field(default=None)
    grpc: Any = field(default=None)

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT`` (IPv6 hosts in brackets)."""
        return url_of(self.host, self.port)

    @property
    def grpc_address(self) -> str | None:
        """The gRPC API's ``host:port``, when it runs."""
        return None if self.grpc is None else str(self.grpc.address)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and following; wait for the server threads to end."""
        self._server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()
        if self.table is not None:
            self.table.stop_following()
        if self.grpc is not None:
            self.grpc.stop()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    refs: Sequence[str],
    source: ModelSource,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    settings: Settings | None = None,
    log_level: str | None = None,
    grpc_port: int | None = None,
    follow_interval: float = 1.0,
    timeout: float = 30.0,
) -> RunningServer:
    """Start the server of `serve` in a background thread and return once it accepts requests.

    For tests and notebooks: always one process; aliases are followed, ``/metrics`` counts.
    ``port=0`` picks a free port (see `RunningServer.url`). Use it as a context manager, or
    call `RunningServer.stop`.

    Args:
        refs: model references, as `serve`.
        source: the registry to resolve and load from.
        host: the address to listen on.
        port: the TCP port (0: any free port).
        settings: limits, token and log level (`Settings` defaults).
        log_level: shorthand for ``settings.log_level``.
        grpc_port: also serve the gRPC API on this port (0: any free port).
        follow_interval: seconds between two polls of the followed references.
        timeout: seconds to wait for the server to accept requests.

    Raises:
        RegistryError, ServingError: as `serve`; ServingError also when the server does not
            start within ``timeout`` seconds.
    """
    settings = settings or Settings()
    if log_level is not None:
        settings = dataclasses.replace(settings, log_level=log_level)
    table = _table(refs, source, settings)
    warning = exposure_warning(host, settings.token)
    if warning:
        logger.warning("%s", warning)
    _access_logging(settings)
    metrics = _metrics(table, None)
    server = _uvicorn(_app(table, settings, metrics), settings)
    sock = _bind(host, port)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="cellpipe-serve", daemon=True
    )
    running = RunningServer(
        host=host,
        port=sock.getsockname()[1],
        _server=server,
        _thread=thread,
        _socket=sock,
        table=table,
        metrics=metrics,
    )
    try:
        if grpc_port is not None:
            running.grpc = _grpc(table, host, grpc_port, settings, metrics)
        table.start_following(interval=follow_interval, on_switch=metrics.switched)
        thread.start()
    except BaseException:
        running.stop()
        raise
    deadline = time.monotonic() + timeout
    while thread.is_alive() and not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        running.stop()
        raise ServingError(f"the model server on {running.url} did not start")
    return running
