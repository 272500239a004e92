"""The lineage page: ``/lineage?run=ID`` or ``?artifact=DIGEST`` (or ``?run=&step=&var=``).

Owns: the lineage graph drawn (`cellpipe.views.lineage.to_svg`, the drawing the notebook view
shows) with each step run linked to its step page and each artifact to its own lineage, the
text listing ``cellpipe lineage`` prints, and a table of the artifacts with download links.
The same truncation as the CLI: ``depth`` and ``limit`` default to 50 (``limit=0``: all), and
the page says when step runs were left out.
"""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cellpipe import api
from cellpipe.ui.layout import error_page, page, url
from cellpipe.ui.pages._pagekit import (
    STYLE,
    artifact_path,
    call_api,
    lineage_hrefs,
    link,
    linked_svg,
    query_path,
    run_path,
    step_path,
    table,
)
from cellpipe.views.format import size_text

DEFAULT_DEPTH = 50  # as `cellpipe lineage --depth`
DEFAULT_LIMIT = 50  # as `cellpipe lineage --limit` (0: all)


def routes() -> list[BaseRoute]:
    """This page's routes."""
    return [Route("/lineage", lineage_page, methods=["GET"], name="lineage")]


def _count(request: Request, name: str, default: int) -> int | None:
    text = request.query_params.get(name, "").strip()
    if not text:
        return default
    return int(text) if text.isdigit() else None


def _form(request: Request, run: str = "", artifact: str = "") -> str:
    return (
        f'<form method="get" action="{escape(url(request, "/lineage"))}" class="cp-form">'
        '<label for="cp-lineage-run">Run</label> '
        f'<input id="cp-lineage-run" name="run" value="{escape(run)}" placeholder="latest"> '
        '<label for="cp-lineage-artifact">or artifact digest</label> '
        f'<input id="cp-lineage-artifact" name="artifact" value="{escape(artifact)}"> '
        '<button type="submit">Show lineage</button></form>'
    )


def _artifacts(request: Request, document: dict[str, Any]) -> str:
    rows = []
    for node in document["nodes"]:
        if node["kind"] != "artifact" or not node.get("digest"):
            continue
        detail = node.get("detail") or {}
        size = detail.get("size")
        rows.append(
            [
                link(
                    request, query_path("/lineage", [("artifact", node["digest"])]), node["label"]
                ),
                escape(str(detail.get("type") or "-")),
                escape(size_text(size) if isinstance(size, int) else "-"),
                link(request, artifact_path(node["digest"]), "download"),
            ]
        )
    return table(["artifact", "type", "size", ""], rows, caption="Artifacts")


def _steps(request: Request, document: dict[str, Any]) -> str:
    rows = []
    for node in document["nodes"]:
        if node["kind"] != "step_run" or not node.get("run_id"):
            continue
        rows.append(
            [
                link(request, step_path(node["run_id"], node["step"]), node["step"]),
                link(request, run_path(node["run_id"]), node["run_id"]),
                escape(str(node.get("status") or "-")),
            ]
        )
    return table(["step", "run", "status"], rows, caption="Step runs")


def lineage_page(request: Request) -> Response:
    """The lineage of a run, an artifact or one step output."""
    params = request.query_params
    run = params.get("run", "").strip() or None
    artifact = params.get("artifact", "").strip() or None
    step = params.get("step", "").strip() or None
    variable = (params.get("var") or params.get("variable") or "").strip() or None
    if run is None and artifact is None:
        body = STYLE + "<h1>Lineage</h1>" + _form(request)
        return page(request, "Lineage", body, nav="runs")
    depth = _count(request, "depth", DEFAULT_DEPTH)
    limit = _count(request, "limit", DEFAULT_LIMIT)
    if depth is None or limit is None:
        return error_page(
            request, "Invalid arguments", "depth and limit are whole numbers", status_code=400
        )
    project = request.app.state.project
    view = call_api(
        request,
        lambda: api.lineage(
            run,
            None if run is not None else artifact,
            step=step,
            variable=variable,
            depth=depth,
            limit=limit,
            project=project,
        ),
    )
    if isinstance(view, Response):
        return view
    from cellpipe.views.lineage import to_svg

    document = view.to_dict()
    kind, root = document["root_kind"], document["root"]
    title = f"Lineage of {kind} {root}"
    notes = []
    if kind == "run":
        notes.append("The run's page: " + link(request, run_path(root), root) + ".")
    if document.get("truncated"):
        all_path = query_path(
            "/lineage",
            [(k, v) for k, v in params.multi_items() if k not in ("limit", "token")]
            + [("limit", "0")],
        )
        notes.append(
            f"At most {escape(str(document.get('limit')))} step runs are shown on each side of "
            f"an artifact (as <code>cellpipe lineage --limit</code>); "
            + link(request, all_path, "show all")
            + "."
        )
    svg = linked_svg(request, to_svg(view.graph), lineage_hrefs(document))
    body = (
        STYLE
        + f"<h1>{escape(title)}</h1>"
        + "".join(f'<p class="cp-note">{n}</p>' for n in notes)
        + f'<div class="cp-graph-scroll" id="cp-lineage-graph">{svg}</div>'
        + _steps(request, document)
        + _artifacts(request, document)
        + "<h2>As text</h2>"
        + f'<pre class="cp-listing" id="cp-lineage-text">{escape(view.text())}</pre>'
        + "<h2>Another lineage</h2>"
        + _form(request, run or "", artifact or "")
    )
    return page(request, title, body, nav="runs")
