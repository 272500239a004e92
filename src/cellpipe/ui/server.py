"""Run the web UI until Ctrl-C (``cellpipe ui``): uvicorn on one socket, a fresh token.

Owns: binding the socket (port 0: any free port, known before serving), the URL with its
token, announcing it once the server accepts connections, ``.cellpipe/ui.json`` while running
(`cellpipe.api.register_ui`; removed on exit), and stopping cleanly on SIGINT/SIGTERM (the
signal is not re-raised: Ctrl-C is the normal way to stop).

Invariants: open event streams cannot hold the shutdown for more than a few seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_hosts(host: str) -> frozenset[str]:
    """The ``Host`` names a UI bound to the loopback address ``host`` answers to."""
    return LOOPBACK_NAMES | {"127.0.0.1", "::1", host.strip("[]").lower()}


def new_token() -> str:
    """An unguessable token (192 random bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def _url(host: str, port: int, token: str) -> str:
    shown = host
    if host in {"0.0.0.0", ""}:  # the wildcard: link to this machine
        shown = "127.0.0.1"
    elif host == "::":
        shown = "::1"
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={token}"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: any free port)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[4])
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(
    project: str | Path | None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    log_level: str = "warning",
    announce: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Serve the UI over ``project`` until SIGINT or SIGTERM; return afterwards.

    Args:
        project: a folder inside the project (None: ``CELLPIPE_PROJECT``, else the cwd).
        host: the address to listen on.
        port: the TCP port (0: any free port).
        token: the token (default: a new one).
        log_level: uvicorn's log level.
        announce: receives ``{"url", "host", "port", "pid"}`` once the server accepts
            connections (the URL carries the token).
    """
    import os

    import uvicorn

    from cellpipe import api
    from cellpipe.ui.app import create_app

    token = token or new_token()
    # On loopback only loopback names may be asked for (DNS rebinding); on another address
    # the user chose who may connect, and the token guards every request.
    allowed = loopback_hosts(host) if is_loopback(host) else None
    app = create_app(project, token=token, allowed_hosts=allowed)
    sock = bind(host, port)
    bound_port = int(sock.getsockname()[1])
    url = _url(host, bound_port, token)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=3,
        lifespan="on",  # the app's lifespan stops the runs this UI started
        access_log=False,
    )

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                api.register_ui(url, project=project)
                if announce is not None:
                    announce({"url": url, "host": host, "port": bound_port, "pid": os.getpid()})

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Ctrl-C or SIGTERM: stop (a second Ctrl-C: stop now); never re-raise the signal.
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    server = _Server(config)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
        api.unregister_ui(project=project)
