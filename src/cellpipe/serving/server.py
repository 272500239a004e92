"""Running the model server: `serve` in the foreground, `start_server` in a background thread.

Owns: resolving and loading every reference before the port is opened (a missing model fails
fast with a `CellpipeError`), binding the socket ourselves (a port in use is a `ServingError`
naming it, not uvicorn's exit), and running uvicorn on it.

Invariants: nothing is served until every reference resolved and loaded; `start_server` returns
only once the server answers on its socket, and `RunningServer.stop` waits for it to end.

Must not depend on: the runner, kfp or notebooks. uvicorn and Starlette load only when a
server starts.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cellpipe.errors import ServingError
from cellpipe.registry.model import ModelSource

__all__ = ["RunningServer", "serve", "start_server"]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on for accepted connections only when the
    # listening socket says TCP. Without it, a keep-alive client (tritonclient, requests
    # sessions) waited about 40 ms per request for a delayed ACK between headers and body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServingError(
                f"port {port} on {host} is already in use", hint="choose another port"
            ) from exc
        raise ServingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(refs: Sequence[str], source: ModelSource, log_level: str) -> Any:
    # Loaded here: the web stack is an optional extra and `import cellpipe` stays fast.
    try:
        import uvicorn

        from cellpipe.serving.app import ModelTable, build_app
    except ImportError as exc:
        raise ServingError(
            f"the model server needs the 'serve' extra ({exc.name} is missing)",
            hint="pip install 'cellpipe[serve]'",
        ) from exc
    app = build_app(ModelTable.resolve(refs, source))
    config = uvicorn.Config(app, log_level=log_level, lifespan="off", access_log=False)
    return uvicorn.Server(config)


def serve(
    refs: Sequence[str],
    source: ModelSource,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
) -> None:
    """Serve model versions over the Open Inference Protocol v2 REST API until interrupted.

    Every reference is resolved and its object loaded first; then the port is opened and
    uvicorn runs until Ctrl-C or SIGTERM. ``/v2/models/NAME`` is the version the reference
    resolved to; ``/v2/models/NAME/versions/N`` is any version of that name, loaded on first
    use.

    Args:
        refs: model references: ``NAME`` (newest), ``NAME:N``, ``NAME@ALIAS``.
        source: the registry to resolve and load from.
        host: the address to listen on (``0.0.0.0`` for every interface).
        port: the TCP port (0: any free port).
        log_level: uvicorn's log level.

    Raises:
        RegistryError: a reference is invalid or names no version (`ModelNotFoundError`).
        ServingError: a model cannot be served, the serve extra is missing, or the port
            cannot be opened.
    """
    server = _uvicorn_server(refs, source, log_level)
    sock = _bind(host, port)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@dataclass(slots=True, kw_only=True)
class RunningServer:
    """A server running in a background thread (see `start_server`)."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread
    _socket: socket.socket

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the server thread to end."""
        self._server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()

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
    log_level: str = "warning",
    timeout: float = 30.0,
) -> RunningServer:
    """Start the server of `serve` in a background thread and return once it accepts requests.

    For tests and notebooks; ``port=0`` picks a free port (see `RunningServer.url`). Use it as
    a context manager, or call `RunningServer.stop`.

    Raises:
        RegistryError, ServingError: as `serve`; ServingError also when the server does not
            start within ``timeout`` seconds.
    """
    server = _uvicorn_server(refs, source, log_level)
    sock = _bind(host, port)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="cellpipe-serve", daemon=True
    )
    thread.start()
    running = RunningServer(
        host=host, port=sock.getsockname()[1], _server=server, _thread=thread, _socket=sock
    )
    deadline = time.monotonic() + timeout
    while thread.is_alive() and not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        running.stop()
        raise ServingError(f"the model server on {running.url} did not start")
    return running
