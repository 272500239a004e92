"""The compare page: ``/compare?run=A&run=B[&run=C...]``.

Owns: parameters and metrics of two or more runs side by side (`cellpipe.api.compare`, the
``compare --json`` document), rows whose values differ highlighted (a class and the word
"differs", not colour alone), and a bar chart per numeric metric across the runs drawn by
Chart.js (``static/vendor/chart.umd.min.js``) from ``static/compare.js``: the page embeds the
data as JSON in ``<script type="application/json" id="cp-chart-data">`` (no inline script).
With fewer than two runs, a form to pick them.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cellpipe import api
from cellpipe.ui.layout import page, url
from cellpipe.ui.pages._pagekit import STYLE, call_api, json_script, link, run_path, table
from cellpipe.views.format import short_value, when_text

PICK_LIMIT = 50


def routes() -> list[BaseRoute]:
    """This page's routes."""
    return [Route("/compare", compare_page, methods=["GET"], name="compare")]


def _numeric(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def chart_data(document: dict[str, Any], presence: dict[str, Any]) -> dict[str, Any]:
    """What compare.js charts: the runs and, per metric with a number in some run, its values."""
    metrics = []
    for row in document["metrics"]:
        present = presence.get("metrics", {}).get(row["name"]) or [True] * len(row["values"])
        values = [_numeric(v) if p else None for v, p in zip(row["values"], present, strict=True)]
        if any(v is not None for v in values):
            metrics.append({"name": row["name"], "values": values, "differs": row["differs"]})
    return {"runs": list(document["runs"]), "metrics": metrics}


def _section(request: Request, comparison: Any, section: str, runs: list[str], title: str) -> str:
    rows = []
    classes = []
    for cells, differs in comparison.rows(section, width=60):
        name, *values = cells
        mark = ' <span class="cp-differs-mark">differs</span>' if differs else ""
        rows.append([escape(name) + mark, *(escape(v) for v in values)])
        classes.append("cp-differs" if differs else "")
    return table(
        ["", *runs],
        rows,
        caption=f"{title} (differences highlighted)",
        row_classes=classes,
        row_header=True,
        empty=f"No {title.lower()} recorded.",
        attrs=f' id="cp-compare-{section}"',
    )


def _picker(request: Request, chosen: list[str], problem: str = "") -> Response:
    listing = call_api(
        request, lambda: api.runs(project=request.app.state.project, limit=PICK_LIMIT)
    )
    if isinstance(listing, Response):
        return listing
    options: list[str] = []
    for run in listing.to_dict()["runs"]:
        rid = run["run_id"]
        checked = " checked" if rid in chosen else ""
        field = f"cp-pick-{len(options)}"
        options.append(
            f'<li><input type="checkbox" name="run" value="{escape(rid)}" id="{field}"{checked}>'
            f' <label for="{field}">{escape(rid)} · {escape(run["status"])} · '
            f"{escape(when_text(run['started_at']))}</label></li>"
        )
    body = (
        STYLE
        + "<h1>Compare runs</h1>"
        + (f'<p role="alert">{escape(problem)}</p>' if problem else "")
        + f'<form method="get" action="{escape(url(request, "/compare"))}">'
        + "<fieldset><legend>Pick two or more runs</legend>"
        + (f"<ul>{''.join(options)}</ul>" if options else "<p>No runs yet.</p>")
        + '</fieldset><button type="submit">Compare</button></form>'
    )
    return page(request, "Compare runs", body, nav="runs")


def compare_page(request: Request) -> Response:
    """``/compare?run=A&run=B``: the runs side by side, with charts of their metrics."""
    chosen = [r for r in request.query_params.getlist("run") if r.strip()]
    if len(chosen) < 2:
        problem = "Pick at least two runs to compare." if chosen else ""
        return _picker(request, chosen, problem)
    project = request.app.state.project
    comparison = call_api(request, lambda: api.compare(*chosen, project=project))
    if isinstance(comparison, Response):
        return comparison
    document = comparison.to_dict()
    runs = list(document["runs"])
    presence = getattr(comparison, "_presence", {}) or {}
    heads = ", ".join(link(request, run_path(r), r) for r in runs)
    data = chart_data(document, presence)
    charts = "".join(
        '<figure class="cp-chart"><div class="cp-chart-box">'
        f'<canvas id="cp-chart-{i}" data-metric="{escape(m["name"])}" '
        f'role="img" aria-label="{escape(m["name"])} by run: '
        + escape(", ".join(f"{r} {short_value(v)}" for r, v in zip(runs, m["values"], strict=True)))
        + f'"></canvas></div><figcaption>{escape(m["name"])}</figcaption></figure>'
        for i, m in enumerate(data["metrics"])
    )
    differing = [
        row["name"]
        for section in ("parameters", "metrics")
        for row in document[section]
        if row["differs"]
    ]
    summary = (
        f"They differ in {escape(', '.join(differing))}."
        if differing
        else "Their parameters and metrics are the same."
    )
    body = (
        STYLE
        + f"<h1>Compare {len(runs)} runs</h1>"
        + f"<p>Runs: {heads}. {summary}</p>"
        + _section(request, comparison, "parameters", runs, "Parameters")
        + _section(request, comparison, "metrics", runs, "Metrics")
        + "<h2>Metrics across the runs</h2>"
        + (
            f'<div class="cp-charts" id="cp-charts">{charts}</div>'
            if charts
            else '<p class="cp-note">No numeric metrics to chart.</p>'
        )
        + json_script("cp-chart-data", data)
    )
    return page(
        request,
        "Compare " + " · ".join(runs),
        body,
        nav="runs",
        scripts=["vendor/chart.umd.min.js", "compare.js"],
    )
