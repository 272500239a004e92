"""The frame of every UI page: the document, the header navigation and in-app links.

Owns: `page` (a full HTML document around a page's body) and `url` (links inside the app).
Invariants: every value a page puts in its body is escaped by the page (``html.escape`` or
`cellpipe.views.html`); `page` escapes the title and attributes it writes itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse

NAV = (("runs", "/", "Runs"), ("new", "/new", "New run"), ("models", "/models", "Models"))


def url(request: Request, path: str) -> str:
    """An in-app link to ``path`` (absolute inside the app, e.g. ``/runs/ID``)."""
    return str(request.scope.get("root_path", "")) + path


def page(
    request: Request,
    title: str,
    body: str,
    *,
    nav: str = "",
    scripts: Sequence[str] = (),
    main_attrs: Mapping[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """A full HTML document: header navigation, ``<main>`` with ``body``, the page's scripts.

    Args:
        request: the request (for links).
        title: the page's title (escaped here).
        body: the page's HTML, already escaped.
        nav: which navigation entry is current (``runs``, ``new``, ``models``).
        scripts: file names under ``/static`` to load (``app.js`` is always loaded).
        main_attrs: attributes of the ``<main>`` element (escaped here), e.g. ``data-run-id``.
        status_code: the response's status.
    """
    links = "".join(
        f'<li><a href="{escape(url(request, path))}"'
        + (' aria-current="page"' if key == nav else "")
        + f">{escape(label)}</a></li>"
        for key, path, label in NAV
    )
    attrs = "".join(f' {escape(k)}="{escape(v)}"' for k, v in (main_attrs or {}).items())
    names = ["app.js", *(s for s in scripts if s != "app.js")]
    tags = "".join(
        f'<script src="{escape(url(request, "/static/" + s))}" defer></script>' for s in names
    )
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · cellpipe</title>"
        f'<link rel="stylesheet" href="{escape(url(request, "/static/app.css"))}">{tags}</head>'
        '<body><a class="cp-skip" href="#cp-main">Skip to content</a>'
        f'<header class="cp-header"><a class="cp-brand" href="{escape(url(request, "/"))}">'
        f'cellpipe</a><nav aria-label="Main"><ul>{links}</ul></nav></header>'
        f'<main id="cp-main"{attrs}>{body}</main></body></html>'
    )
    return HTMLResponse(document, status_code=status_code)


def error_page(
    request: Request, title: str, message: str, *, status_code: int = 404
) -> HTMLResponse:
    """A page saying what went wrong (``message`` is escaped here)."""
    body = f"<h1>{escape(title)}</h1><p>{escape(message)}</p>"
    return page(request, title, body, status_code=status_code)
