"""A run's pages: the run (graph, steps), a step (logs, outputs, values, files), downloads.

Owns: ``/runs/{run_id}``, ``/runs/{run_id}/graph`` (the SVG alone, for live.js),
``/runs/{run_id}/steps/{step}``, ``/runs/{run_id}/steps/{step}/log`` (plain text),
``/sandbox/runs/{run_id}/steps/{step}/outputs`` (the step's executed cells as HTML, only
ever shown in a sandboxed iframe) and ``/artifacts/{digest}`` (a download by digest).

Invariants: the run page marks what live.js updates: ``<main data-run-id data-run-status>``,
``#cp-run-status``, ``#cp-graph``, rows ``<tr data-step>`` with ``.cp-state``,
``.cp-duration``, ``.cp-reason`` cells, and ``<pre class="cp-output" data-step>``. Notebook
HTML is only served under ``/sandbox/`` (the app gives it a sandboxing CSP).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from cellpipe import api
from cellpipe.errors import CellpipeError
from cellpipe.ui.layout import error_page, page, url
from cellpipe.views.format import short_value, size_text
from cellpipe.views.graph import graph_svg

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _seconds(value: Any) -> str:
    if value is None:
        return ""
    value = float(value)
    return f"{value:.1f} s" if value < 60 else f"{int(value) // 60} min {int(value) % 60:02d} s"


def _problem(error: CellpipeError) -> str:
    return error.message + (f" ({error.hint})" if error.hint else "")


def _not_found(request: Request, error: CellpipeError) -> HTMLResponse:
    return error_page(request, "Not found", _problem(error), status_code=404)


def _pairs(title: str, items: Mapping[str, Any], css: str) -> str:
    if not items:
        return ""
    rows = "".join(
        f'<tr><th scope="row">{escape(str(k))}</th><td>{escape(short_value(v))}</td></tr>'
        for k, v in items.items()
    )
    return (
        f'<section class="{css}" aria-labelledby="{css}-h"><h2 id="{css}-h">{escape(title)}</h2>'
        f'<table class="cp-table cp-pairs"><tbody>{rows}</tbody></table></section>'
    )


def _graph(run_id: str, project: Any) -> tuple[str, dict[str, Any]]:
    drawn = api.run_graph(run_id, project=project)
    svg = graph_svg(drawn["nodes"], drawn["edges"], title=f"Steps of run {drawn['run_id']}")
    return svg, drawn


def run_page(request: Request) -> Response:
    """``/runs/{run_id}``: the run's status, parameters, metrics, graph and steps."""
    project = request.app.state.project
    try:
        detail = api.show(request.path_params["run_id"], project=project).to_dict()
        svg, drawn = _graph(detail["run_id"], project)
    except CellpipeError as error:
        return _not_found(request, error)
    run_id, status = detail["run_id"], detail["status"]
    steps = list(detail["steps"])
    recorded = {s["step"] for s in steps}
    steps += [
        {"step": n.id, "status": n.state or "waiting", "cache_reason": "", "duration_s": None}
        for n in drawn["nodes"]
        if n.id not in recorded
    ]
    rows = []
    for step in steps:
        name = step["step"]
        link = url(request, f"/runs/{run_id}/steps/{name}")
        source = step.get("source_run")
        reason = escape(step.get("cache_reason") or "")
        if source:
            reason += (
                f' <a href="{escape(url(request, "/runs/" + source))}">(from {escape(source)})</a>'
            )
        rows.append(
            f'<tr data-step="{escape(name)}"><th scope="row"><a href="{escape(link)}">'
            f"{escape(name)}</a></th>"
            f'<td class="cp-state"><span class="cp-status cp-status-{escape(step["status"])}">'
            f"{escape(step['status'])}</span></td>"
            f'<td class="cp-duration cp-num">{escape(_seconds(step.get("duration_s")))}</td>'
            f'<td class="cp-reason">{reason}</td></tr>'
        )
    table = (
        '<table class="cp-table cp-steps" data-sortable><caption>Steps</caption>'
        '<thead><tr><th scope="col">Step</th><th scope="col">State</th>'
        '<th scope="col">Duration</th><th scope="col">Cache decision</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    outputs = "".join(
        f'<h3 id="out-{escape(s["step"])}">{escape(s["step"])}</h3>'
        f'<pre class="cp-output" data-step="{escape(s["step"])}" '
        f'aria-labelledby="out-{escape(s["step"])}"></pre>'
        for s in steps
    )
    live = (
        f'<section class="cp-live" aria-labelledby="cp-live-h"><h2 id="cp-live-h">Output</h2>'
        f"{outputs}</section>"
        if status == "running"
        else ""
    )
    failure = (
        f'<pre class="cp-error">{escape(detail["error"])}</pre>' if detail.get("error") else ""
    )
    notebook = str(detail.get("notebook") or "")
    started = (detail.get("started_at") or "")[:19].replace("T", " ")
    facts = (
        '<dl class="cp-facts">'
        f'<dt>Status</dt><dd><span id="cp-run-status" class="cp-status cp-status-{escape(status)}"'
        f' role="status">{escape(status)}</span></dd>'
        f"<dt>Notebook</dt><dd>{escape(notebook)}</dd>"
        f"<dt>Started</dt><dd>{escape(started)}</dd>"
        f"<dt>Duration</dt><dd>{escape(_seconds(detail.get('duration_s')))}</dd></dl>"
    )
    links = (
        '<p class="cp-links">'
        f'<a href="{escape(url(request, "/lineage?run=" + run_id))}">Lineage</a> · '
        f'<a href="{escape(url(request, "/compare?run=" + run_id))}">Compare…</a></p>'
    )
    body = (
        f"<h1>Run <code>{escape(run_id)}</code></h1>{facts}{links}{failure}"
        + '<div class="cp-row">'
        + _pairs("Parameters", detail.get("parameters") or {}, "cp-params")
        + _pairs("Metrics", detail.get("metrics") or {}, "cp-metrics")
        + "</div>"
        + '<section aria-labelledby="cp-graph-h"><h2 id="cp-graph-h">Graph</h2>'
        f'<div id="cp-graph">{svg}</div></section>'
        f"{table}{live}"
    )
    return page(
        request,
        f"Run {run_id}",
        body,
        nav="runs",
        scripts=("live.js",),
        main_attrs={"data-run-id": run_id, "data-run-status": status},
    )


def run_graph(request: Request) -> Response:
    """``/runs/{run_id}/graph``: the run's graph as one ``<svg>`` (current step states)."""
    try:
        svg, _ = _graph(request.path_params["run_id"], request.app.state.project)
    except CellpipeError as error:
        return PlainTextResponse(_problem(error), status_code=404)
    return Response(svg, media_type="image/svg+xml; charset=utf-8")


def _values(request: Request, title: str, values: Mapping[str, Any]) -> str:
    if not values:
        return f"<h3>{escape(title)}</h3><p>None.</p>"
    rows = []
    for name, ref in sorted(values.items()):
        digest = str(ref.get("digest") or "")
        link = url(request, f"/artifacts/{digest}")
        rows.append(
            f'<tr><th scope="row">{escape(name)}</th><td>{escape(str(ref.get("type") or ""))}</td>'
            f"<td>{escape(str(ref.get('serializer') or ''))}</td>"
            f'<td class="cp-num" data-sort="{escape(str(ref.get("size") or 0))}">'
            f"{escape(size_text(int(ref.get('size') or 0)))}</td>"
            f'<td><code title="{escape(digest)}">{escape(digest[:19])}…</code></td>'
            f'<td><a href="{escape(link)}" download="{escape(name)}">Download '
            f'<span class="cp-visually-hidden">{escape(name)}</span></a></td></tr>'
        )
    return (
        f'<table class="cp-table" data-sortable><caption>{escape(title)}</caption><thead><tr>'
        '<th scope="col">Name</th><th scope="col">Type</th><th scope="col">Serializer</th>'
        '<th scope="col">Size</th><th scope="col">Digest</th><th scope="col">File</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _changes(run_id: str, step: str, project: Any, written: list[dict[str, Any]]) -> str:
    try:
        changes = api.snapshot_changes(run_id, step, project=project)["changes"]
    except CellpipeError as error:
        note = f"<p>{escape(error.message)}</p>"
        changes = None
    else:
        note = "" if changes else "<p>The step changed no workspace file.</p>"
    rows = []
    if changes:
        for name, change in sorted(changes.items()):
            what = change if isinstance(change, str) else short_value(change, width=120)
            rows.append(
                f'<tr><th scope="row">{escape(str(name))}</th><td>{escape(str(what))}</td></tr>'
            )
    elif written:
        for item in written:
            rows.append(
                f'<tr><th scope="row">{escape(str(item.get("file")))}</th>'
                f"<td>{escape(str(item.get('change') or ''))} "
                f"({escape(str(item.get('source') or ''))})</td></tr>"
            )
    table = (
        '<table class="cp-table"><caption>Files changed (snapshot before → after)</caption>'
        '<thead><tr><th scope="col">File</th><th scope="col">Change</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else ""
    )
    return (
        '<section aria-labelledby="cp-files-h"><h2 id="cp-files-h">Workspace files</h2>'
        f"{note}{table}</section>"
    )


def step_page(request: Request) -> Response:
    """``/runs/{run_id}/steps/{step}``: cache decision, logs, outputs, values and files."""
    project = request.app.state.project
    name = request.path_params["step"]
    try:
        detail = api.show(request.path_params["run_id"], project=project).to_dict()
    except CellpipeError as error:
        return _not_found(request, error)
    run_id = detail["run_id"]
    step = next((s for s in detail["steps"] if s["step"] == name), None)
    if step is None:
        message = f"run {run_id} has no step '{name}' (yet)"
        return error_page(request, "Not found", message, status_code=404)
    try:
        log = api.logs(run_id, name, project=project).to_dict()["log"]
    except CellpipeError as error:
        log = error.message
    source = step.get("source_run")
    from_run = (
        f' <a href="{escape(url(request, f"/runs/{source}/steps/{name}"))}">'
        f"(computed in {escape(source)})</a>"
        if source
        else ""
    )
    run_link = url(request, f"/runs/{run_id}")
    frame = url(request, f"/sandbox/runs/{run_id}/steps/{name}/outputs")
    failure = f'<pre class="cp-error">{escape(step["error"])}</pre>' if step.get("error") else ""
    body = (
        f'<nav aria-label="Breadcrumb" class="cp-crumbs"><a href="{escape(run_link)}">'
        f"Run {escape(run_id)}</a> / {escape(name)}</nav>"
        f"<h1>Step <code>{escape(name)}</code></h1>"
        '<dl class="cp-facts">'
        f'<dt>State</dt><dd><span class="cp-status cp-status-{escape(step["status"])}">'
        f"{escape(step['status'])}</span></dd>"
        f"<dt>Duration</dt><dd>{escape(_seconds(step.get('duration_s')))}</dd>"
        f"<dt>Cache decision</dt><dd>{escape(step.get('cache_reason') or '')}{from_run}</dd>"
        f"<dt>Cache key</dt><dd><code>{escape(step.get('cache_key') or '')}</code></dd></dl>"
        f"{failure}"
        + _pairs("Metrics", step.get("metrics") or {}, "cp-metrics")
        + '<section aria-labelledby="cp-outputs-h"><h2 id="cp-outputs-h">Outputs</h2>'
        f'<iframe class="cp-sandbox" sandbox src="{escape(frame)}" '
        f'title="Displayed outputs of step {escape(name)}" loading="lazy"></iframe></section>'
        '<section aria-labelledby="cp-log-h"><h2 id="cp-log-h">Log</h2>'
        f'<p><a href="{escape(url(request, f"/runs/{run_id}/steps/{name}/log"))}">'
        "Plain text</a></p>"
        f'<pre class="cp-log" tabindex="0">{escape(_ANSI.sub("", log))}</pre></section>'
        '<section aria-labelledby="cp-values-h"><h2 id="cp-values-h">Values</h2>'
        + _values(request, "Inputs", step.get("inputs") or {})
        + _values(request, "Outputs", step.get("outputs") or {})
        + "</section>"
        + _changes(run_id, name, project, list(step.get("files_written") or []))
    )
    return page(request, f"{name} · {run_id}", body, nav="runs")


def step_log(request: Request) -> Response:
    """``/runs/{run_id}/steps/{step}/log``: the step's log as plain text."""
    try:
        found = api.logs(
            request.path_params["run_id"],
            request.path_params["step"],
            project=request.app.state.project,
        )
    except CellpipeError as error:
        return PlainTextResponse(_problem(error), status_code=404)
    return PlainTextResponse(_ANSI.sub("", found.to_dict()["log"]))


def _output_html(output: Mapping[str, Any]) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        text = output.get("text") or ""
        text = "".join(text) if isinstance(text, list) else str(text)
        return f'<pre class="stream {escape(str(output.get("name")))}">{escape(text)}</pre>'
    if kind == "error":
        trace = "\n".join(output.get("traceback") or [])
        return f'<pre class="error">{escape(_ANSI.sub("", trace))}</pre>'
    data = output.get("data") or {}

    def text_of(mime: str) -> str:
        value = data.get(mime, "")
        return "".join(value) if isinstance(value, list) else str(value)

    for mime in ("image/png", "image/jpeg", "image/gif"):
        if mime in data:
            raw = re.sub(r"\s", "", text_of(mime))
            try:
                base64.b64decode(raw, validate=True)
            except ValueError:
                continue
            return f'<img alt="figure" src="data:{mime};base64,{raw}">'
    if "image/svg+xml" in data:
        svg = base64.b64encode(text_of("image/svg+xml").encode()).decode()
        return f'<img alt="figure" src="data:image/svg+xml;base64,{svg}">'
    if "text/html" in data:
        return f'<div class="html">{text_of("text/html")}</div>'  # sandboxed: see the module
    if "text/plain" in data:
        return f"<pre>{escape(text_of('text/plain'))}</pre>"
    return ""


_SANDBOX_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:8px;color:#111827}"
    "summary{color:#6b7280;cursor:pointer}.cell{margin-bottom:10px}"
    "pre{white-space:pre-wrap;background:#f9fafb;padding:6px;margin:4px 0;overflow:auto}"
    "pre.source{background:#eef2ff}pre.error{background:#fef2f2;color:#7f1d1d}"
    "pre.stderr{background:#fff7ed}img{max-width:100%}"
    "table{border-collapse:collapse}td,th{border:1px solid #e5e7eb;padding:2px 6px}"
)


def render_cells(notebook: Mapping[str, Any]) -> str:
    """A step's executed notebook as one HTML document: each output, its code folded above.

    Cells that displayed nothing (imports, functions, parameters) are left out.
    """
    parts = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code" or not cell.get("outputs"):
            continue
        source = cell.get("source") or ""
        source = "".join(source) if isinstance(source, list) else str(source)
        outputs = "".join(_output_html(o) for o in cell.get("outputs") or [])
        parts.append(
            '<section class="cell"><details><summary>code</summary>'
            f'<pre class="source">{escape(source)}</pre></details>{outputs}</section>'
        )
    body = "".join(parts) or "<p>This step displayed nothing.</p>"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<style>{_SANDBOX_STYLE}</style></head><body>{body}</body></html>"
    )


def sandbox_outputs(request: Request) -> Response:
    """``/sandbox/runs/{run_id}/steps/{step}/outputs``: the step's cells (sandboxed)."""
    try:
        notebook = api.step_notebook(
            request.path_params["run_id"],
            request.path_params["step"],
            project=request.app.state.project,
        )
    except CellpipeError as error:
        return PlainTextResponse(_problem(error), status_code=404)
    return HTMLResponse(render_cells(notebook))


def artifact(request: Request) -> Response:
    """``/artifacts/{digest}``: an artifact's bytes, as a download."""
    digest = request.path_params["digest"]
    try:
        path = api.artifact_file(digest, project=request.app.state.project)
    except CellpipeError as error:
        return PlainTextResponse(_problem(error), status_code=404)
    name = digest.replace(":", "-")
    return FileResponse(path, media_type="application/octet-stream", filename=name)


def routes() -> list[BaseRoute]:
    """This page's routes."""
    return [
        Route("/runs/{run_id}", run_page, name="run"),
        Route("/runs/{run_id}/graph", run_graph, name="run_graph"),
        Route("/runs/{run_id}/steps/{step}", step_page, name="step"),
        Route("/runs/{run_id}/steps/{step}/log", step_log, name="step_log"),
        Route("/sandbox/runs/{run_id}/steps/{step}/outputs", sandbox_outputs, name="outputs"),
        Route("/artifacts/{digest}", artifact, name="artifact"),
    ]
