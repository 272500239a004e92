"""The local web UI's application: routes, the token check and the security headers.

Owns: `create_app` (a Starlette app over one project), the token middleware (every request
needs the token: ``?token=T`` once sets an HttpOnly, SameSite=Strict cookie and redirects to
the same URL without it; POST/PUT/PATCH/DELETE also need the cookie and a same-origin
request, or an ``Authorization: Bearer T`` header), and the headers every response carries
(a Content-Security-Policy, ``nosniff``, ``no-referrer``; under ``/sandbox/`` the sandboxing
policy that notebook HTML and figures are served with).

Invariants: nothing here or in the pages opens a store: every page calls one `cellpipe.api`
function and renders what it returns. No file outside the project is served.

Must not depend on: cli, the stores (import-linter contracts).
"""

from __future__ import annotations

import hmac
import importlib
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
COOKIE = "cellpipe_ui_token"
PAGE_MODULES = (
    "cellpipe.ui.pages.runs",
    "cellpipe.ui.pages.run",
    "cellpipe.ui.pages.compare",
    "cellpipe.ui.pages.lineage",
    "cellpipe.ui.pages.models",
    "cellpipe.ui.pages.new_run",
    "cellpipe.ui.live",
)
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
SANDBOX_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def create_app(
    project: Path | str | None, *, token: str, allowed_hosts: frozenset[str] | None = None
) -> Starlette:
    """The UI over one project, every route behind ``token``.

    Args:
        project: a folder inside the project (passed as ``project=`` to the api functions;
            None: ``CELLPIPE_PROJECT``, else the working directory).
        token: the secret every request must carry (once as ``?token=``, then as a cookie).
        allowed_hosts: the host names (without port) a request's ``Host`` header may give;
            None: any. A UI on loopback allows only loopback names, so a page of another
            site whose name is made to resolve to 127.0.0.1 (DNS rebinding) is refused
            even before the token is checked.
    """
    if not token:
        raise ValueError("the UI needs a non-empty token")
    routes: list[BaseRoute] = [
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static")
    ]
    for name in PAGE_MODULES:
        routes.extend(importlib.import_module(name).routes())
    from cellpipe.ui.live import lifespan  # stops the runs this UI started (U2)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.project = None if project is None else Path(project)
    app.state.token = token
    app.add_middleware(TokenMiddleware, token=token, allowed_hosts=allowed_hosts)
    return app


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def host_name(host: str) -> str:
    """The name of a ``Host`` header without its port, lowercased (``[::1]:80`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _same_origin(scope: Scope, headers: dict[str, str]) -> bool:
    """Whether a state-changing request comes from one of the UI's own pages."""
    site = headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return False
    origin = headers.get("origin")
    # With `Referrer-Policy: no-referrer` a browser sends `Origin: null` on its own form posts
    # and fetches; then the browser-set Sec-Fetch-Site alone decides.
    if origin is not None and origin != "null":
        host = headers.get("host", "")
        return origin in {f"http://{host}", f"https://{host}"}
    return site == "same-origin"


class TokenMiddleware:
    """Refuses every request without the token; adds the security headers to each response."""

    def __init__(
        self, app: ASGIApp, *, token: str, allowed_hosts: frozenset[str] | None = None
    ) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = allowed_hosts

    def _is_token(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the token, then pass the request on with the security headers added."""
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if self.allowed_hosts is not None:
            name = host_name(headers.get("host", ""))
            if name not in self.allowed_hosts:
                await _refuse(
                    _with_headers(send, sandbox=False),
                    f"This UI answers only to {', '.join(sorted(self.allowed_hosts))}; "
                    f"the request was for host {name!r}. Open the link `cellpipe ui` printed.",
                )
                return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except CookieError:  # a malformed cookie header is just no cookie
            cookie = SimpleCookie()
        has_cookie = COOKIE in cookie and self._is_token(cookie[COOKIE].value)
        auth = headers.get("authorization", "")
        has_bearer = auth.startswith("Bearer ") and self._is_token(auth[len("Bearer ") :])
        method = scope.get("method", "GET")
        sandbox = scope.get("path", "").startswith("/sandbox/")
        send = _with_headers(send, sandbox=sandbox)
        if scope["type"] == "http" and given and method in SAFE_METHODS:
            if not self._is_token(given[-1]):
                await _refuse(send, "This link's token is not the one this UI was started with.")
                return
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
            await _redirect(send, location, self.token)
            return
        if scope["type"] == "websocket" and not (has_cookie or has_bearer):
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        if not (has_cookie or has_bearer):
            await _refuse(
                send, "Open the UI with the link `cellpipe ui` printed (it has the token)."
            )
            return
        if method not in SAFE_METHODS and not has_bearer and not _same_origin(scope, headers):
            await _refuse(send, "Cross-site requests cannot change anything here.")
            return
        await self.app(scope, receive, send)


def _with_headers(send: Send, *, sandbox: bool) -> Send:
    extra = [
        (b"content-security-policy", (SANDBOX_CSP if sandbox else CSP).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]
    if not sandbox:
        extra.append((b"x-frame-options", b"DENY"))

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in extra}
            kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
            message["headers"] = kept + extra
        await send(message)

    return wrapped


async def _redirect(send: Send, location: str, token: str) -> None:
    cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode("latin-1")),
                (b"set-cookie", cookie.encode("latin-1")),
                (b"cache-control", b"no-store"),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _refuse(send: Send, why: str) -> None:
    from html import escape

    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Forbidden · cellpipe"
        f"</title></head><body><main><h1>Forbidden</h1><p>{escape(why)}</p></main></body></html>"
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
