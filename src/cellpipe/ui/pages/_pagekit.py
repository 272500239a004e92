"""Small HTML pieces the compare, lineage and models pages share.

Owns: escaped tables with real header cells (``<th scope>``), links to runs/steps/artifacts,
JSON embedded for a page's script, an api error shown as a page, and the lineage SVG with its
nodes linked to the pages they stand for.

Invariants: every value is escaped here (``html.escape``); embedded JSON cannot close its
``<script>`` element; no store is opened (pages call `cellpipe.api`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from html import escape, unescape
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse

from cellpipe.errors import (
    CellpipeError,
    ModelNotFoundError,
    ProjectNotFoundError,
    RunNotFoundError,
    StorageError,
)
from cellpipe.ui.layout import error_page, url
from cellpipe.views.format import short_value

# A small style sheet of these pages (CSP allows inline styles, not inline scripts).
STYLE = (
    "<style>"
    ".cp-table{border-collapse:collapse;margin:.4rem 0 1rem}"
    ".cp-table th,.cp-table td{border:1px solid #d0d7de;padding:.2rem .6rem;text-align:left;"
    "vertical-align:top}"
    ".cp-table thead th{background:#f6f8fa}"
    ".cp-differs th,.cp-differs td{background:#fff8c5}"
    ".cp-differs-mark{font-size:.8em;color:#7d4e00;margin-left:.4em}"
    ".cp-charts{display:flex;flex-wrap:wrap;gap:1rem}"
    ".cp-chart{width:360px;margin:0}.cp-chart-box{position:relative;height:220px}"
    ".cp-graph-scroll{overflow:auto;max-height:70vh;border:1px solid #d0d7de;padding:.4rem}"
    ".cp-graph-scroll a .cp-node rect{cursor:pointer}"
    ".cp-graph-scroll a:focus .cp-node rect{stroke-width:3}"
    ".cp-note{color:#57606a}"
    ".cp-cmd{background:#f6f8fa;padding:.2rem .4rem;border-radius:4px}"
    "pre.cp-listing{max-height:30em;overflow:auto;background:#f6f8fa;padding:.5rem}"
    "</style>"
)


def link(request: Request, path: str, text: str) -> str:
    """``<a href=path>text</a>``, escaped."""
    return f'<a href="{escape(url(request, path))}">{escape(text)}</a>'


def run_path(run_id: str) -> str:
    """The run page's path."""
    return f"/runs/{quote(run_id, safe='')}"


def step_path(run_id: str, step: str) -> str:
    """A step page's path."""
    return f"{run_path(run_id)}/steps/{quote(step, safe='')}"


def artifact_path(digest: str) -> str:
    """An artifact's download path."""
    return f"/artifacts/{quote(digest, safe=':')}"


def query_path(path: str, params: Iterable[tuple[str, str]]) -> str:
    """``path?a=b&...`` (values encoded)."""
    pairs = list(params)
    return f"{path}?{urlencode(pairs)}" if pairs else path


def value_text(value: object) -> str:
    """A recorded value as short text (strings as they are)."""
    return value if isinstance(value, str) else short_value(value)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    caption: str = "",
    row_classes: Sequence[str] | None = None,
    row_header: bool = False,
    empty: str = "(none)",
    attrs: str = "",
) -> str:
    """A table of already escaped cells, with ``<th scope=col>`` headers.

    Args:
        columns: the header texts (escaped here).
        rows: the cells, already HTML (escape values before).
        caption: the table's caption (escaped here).
        row_classes: per row, a class for ``<tr>`` (e.g. ``cp-differs``).
        row_header: the first cell of each row is a ``<th scope=row>``.
        empty: shown instead of a table without rows.
        attrs: extra attributes of ``<table>`` (already escaped).
    """
    rows = list(rows)
    if not rows:
        head = f"<h3>{escape(caption)}</h3>" if caption else ""
        return f'{head}<p class="cp-note">{escape(empty)}</p>'
    out = [f'<table class="cp-table"{attrs}>']
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    out.append("<thead><tr>")
    out.extend(f'<th scope="col">{escape(c)}</th>' for c in columns)
    out.append("</tr></thead><tbody>")
    for index, row in enumerate(rows):
        cls = row_classes[index] if row_classes is not None else ""
        out.append(f'<tr class="{escape(cls)}">' if cls else "<tr>")
        for position, cell in enumerate(row):
            if row_header and position == 0:
                out.append(f'<th scope="row">{cell}</th>')
            else:
                out.append(f"<td>{cell}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def json_script(element_id: str, data: Any) -> str:
    """Data for a page's script: ``<script type="application/json" id=...>`` (not executed)."""
    text = json.dumps(data, allow_nan=False, default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{escape(element_id)}">{text}</script>'


def api_error_page(request: Request, exc: CellpipeError) -> HTMLResponse:
    """An api error as a page: 404 for what does not exist, 400 otherwise."""
    missing = isinstance(exc, RunNotFoundError | ModelNotFoundError | ProjectNotFoundError)
    status = 404 if missing else 500 if isinstance(exc, StorageError) else 400
    message = exc.message + (f" ({exc.hint})" if exc.hint else "")
    return error_page(request, exc.headline.capitalize(), message, status_code=status)


def call_api(request: Request, fn: Callable[[], Any]) -> Any:
    """Call an api function; a `CellpipeError` comes back as an error page to return."""
    try:
        return fn()
    except CellpipeError as exc:
        return api_error_page(request, exc)


_NODE = re.compile(r'(<g class="cp-node" data-id="([^"]*)"[^>]*>.*?</g>)', re.S)


def linked_svg(request: Request, svg: str, hrefs: dict[str, str]) -> str:
    """The SVG with each node whose id is in ``hrefs`` wrapped in a link to that path."""

    def wrap(match: re.Match[str]) -> str:
        path = hrefs.get(unescape(match.group(2)))
        if path is None:
            return match.group(1)
        return f'<a href="{escape(url(request, path))}">{match.group(1)}</a>'

    return _NODE.sub(wrap, svg)


def lineage_hrefs(document: dict[str, Any]) -> dict[str, str]:
    """For a lineage document's nodes: step runs -> the step page, artifacts -> their lineage."""
    hrefs = {}
    for node in document.get("nodes", []):
        if node.get("kind") == "step_run" and node.get("run_id") and node.get("step"):
            hrefs[node["id"]] = step_path(node["run_id"], node["step"])
        elif node.get("kind") == "artifact" and node.get("digest"):
            hrefs[node["id"]] = query_path("/lineage", [("artifact", node["digest"])])
    return hrefs
