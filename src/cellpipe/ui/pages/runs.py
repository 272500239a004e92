"""The runs page (``/``): a sortable, filterable, paginated table of the project's runs.

Owns: the filter language of the box (``acc > 0.9``, ``MAX_DEPTH=6``, ``status:failed``,
combined with spaces or commas; see `parse_filter`), the table and its pagination.
The filter runs on the server (`cellpipe.api.ui_runs_page`); app.js adds sorting by a
column and a text filter over the rows shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Route

from cellpipe import api
from cellpipe.errors import CellpipeError
from cellpipe.ui.layout import page, url
from cellpipe.views.format import short_value

PAGE_SIZE = 100
_TERM = re.compile(
    r"\s*(?:status\s*:\s*(?P<status>[\w-]+)"
    r"|(?P<name>[A-Za-z_][\w.-]*)\s*(?P<op>>=|<=|==|!=|>|<|=)\s*(?P<value>[^\s,]+))\s*,?"
)


@dataclass
class RunFilter:
    """A parsed filter box: a status, ``NAME=VALUE`` parameters and metric comparisons."""

    status: str | None = None
    params: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)


def parse_filter(text: str) -> RunFilter:
    """Parse the filter box: ``status:S``, ``NAME=VALUE`` (a parameter), ``NAME OP NUMBER``.

    ``OP`` is one of ``> >= < <= == !=`` and compares a metric; a single ``=`` names a
    parameter's value.

    Raises:
        CellpipeError: for text that is none of these (says which part).
    """
    found = RunFilter()
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TERM.match(text, position)
        if match is None or match.end() == position:
            raise CellpipeError(
                f"cannot read the filter at '{text[position:]}'",
                hint="write status:failed, MAX_DEPTH=6 or acc > 0.9 (several: spaces or commas)",
            )
        position = match.end()
        if match["status"]:
            found.status = match["status"]
        elif match["op"] == "=":
            found.params.append(f"{match['name']}={match['value']}")
        else:
            found.metrics.append(f"{match['name']}{match['op']}{match['value']}")
    return found


def _duration(seconds: Any) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return (
        f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
    )


def _number(value: Any) -> str:
    """The ``data-sort`` value of a cell: numbers as themselves, the rest as text."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return repr(value)
    return ""


def _cell(value: Any, *, numeric: bool = False) -> str:
    if value is None:
        return "<td></td>"
    shown = short_value(value) if not isinstance(value, str) else value
    sort = _number(value)
    attrs = f' data-sort="{escape(sort)}"' if sort else ""
    css = ' class="cp-num"' if numeric or sort else ""
    return f"<td{css}{attrs}>{escape(str(shown))}</td>"


def _table(request: Request, runs: Sequence[dict[str, Any]]) -> str:
    params = sorted({k for r in runs for k in r["parameters"]})
    metrics = sorted({k for r in runs for k in r["metrics"]})
    heads = [
        ("select", "Select"),
        ("run", "Run"),
        ("status", "Status"),
        ("duration", "Duration"),
        ("start", "Started"),
        ("notebook", "Notebook"),
        *((f"p:{p}", p) for p in params),
        *((f"m:{m}", m) for m in metrics),
    ]
    head = "".join(
        '<th scope="col"><span class="cp-visually-hidden">Select</span></th>'
        if key == "select"
        else f'<th scope="col" data-key="{escape(key)}"'
        + (' class="cp-param"' if key.startswith("p:") else "")
        + (' class="cp-metric"' if key.startswith("m:") else "")
        + f">{escape(label)}</th>"
        for key, label in heads
    )
    rows = []
    for run in runs:
        run_id = run["run_id"]
        link = url(request, f"/runs/{run_id}")
        notebook = str(run.get("notebook") or "").rsplit("/", 1)[-1]
        cells = [
            f'<td><input type="checkbox" name="run" value="{escape(run_id)}" '
            f'id="sel-{escape(run_id)}" aria-label="Select run {escape(run_id)}"></td>',
            f'<th scope="row"><a href="{escape(link)}">{escape(run_id)}</a></th>',
            f'<td><span class="cp-status cp-status-{escape(run["status"])}">'
            f"{escape(run['status'])}</span></td>",
            f'<td class="cp-num" data-sort="{escape(_number(run["duration_s"]))}">'
            f"{escape(_duration(run['duration_s']))}</td>",
            f'<td><time datetime="{escape(run["started_at"] or "")}">'
            f"{escape((run['started_at'] or '')[:19].replace('T', ' '))}</time></td>",
            f'<td title="{escape(str(run.get("notebook") or ""))}">{escape(notebook)}</td>',
            *(_cell(run["parameters"].get(p)) for p in params),
            *(_cell(run["metrics"].get(m), numeric=True) for m in metrics),
        ]
        rows.append(f'<tr data-run-id="{escape(run_id)}">{"".join(cells)}</tr>')
    return (
        '<table class="cp-table cp-runs" data-sortable>'
        f"<caption class='cp-visually-hidden'>Runs, newest first</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def runs_page(request: Request) -> HTMLResponse:
    """``/``: the runs table. Query: ``q`` (the filter box), ``page`` (from 1)."""
    query = request.query_params.get("q", "")
    try:
        number = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        number = 1
    error = ""
    listing: dict[str, Any] = {"runs": [], "has_more": False}
    try:
        wanted = parse_filter(query)
        listing = api.ui_runs_page(
            request.app.state.project,
            status=wanted.status,
            params=wanted.params,
            metrics=wanted.metrics,
            offset=(number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
    except CellpipeError as problem:
        error = problem.message + (f" ({problem.hint})" if problem.hint else "")
    runs = listing["runs"]

    def link(n: int) -> str:
        items = [("q", query)] if query else []
        items.append(("page", str(n)))
        return escape(url(request, "/?" + urlencode(items)))

    pager = []
    if number > 1:
        pager.append(f'<a rel="prev" href="{link(number - 1)}">← Newer</a>')
    first = (number - 1) * PAGE_SIZE + 1
    shown = f"runs {first} to {first + len(runs) - 1}" if runs else "no runs"
    pager.append(f'<span class="cp-page-info">{escape(shown)}</span>')
    if listing["has_more"]:
        pager.append(f'<a rel="next" href="{link(number + 1)}">Older →</a>')
    nav = f'<nav class="cp-pager" aria-label="Pages">{" ".join(pager)}</nav>'
    problem_html = f'<p class="cp-error" role="alert">{escape(error)}</p>' if error else ""
    empty = (
        '<p class="cp-empty">No runs match. Run a notebook with <code>cellpipe run NOTEBOOK</code>'
        ' or start one from <a href="' + escape(url(request, "/new")) + '">New run</a>.</p>'
        if not runs and not error
        else ""
    )
    body = (
        "<h1>Runs</h1>"
        f'<form class="cp-filter" method="get" action="{escape(url(request, "/"))}" role="search">'
        '<label for="cp-q">Filter runs</label>'
        f'<input id="cp-q" name="q" type="search" value="{escape(query)}" '
        'placeholder="acc &gt; 0.9, MAX_DEPTH=6, status:failed" aria-describedby="cp-q-help">'
        '<button type="submit">Apply</button>'
        '<small id="cp-q-help">Metrics: <code>acc &gt; 0.9</code>; parameters: '
        "<code>MAX_DEPTH=6</code>; status: <code>status:failed</code>.</small></form>"
        f"{problem_html}"
        '<div class="cp-table-tools"><label for="cp-find">Find in this page</label>'
        '<input id="cp-find" type="search" data-filter-table="cp-runs-table" '
        'placeholder="text in any column"></div>'
        f'<form method="get" action="{escape(url(request, "/compare"))}" id="cp-compare-form">'
        '<button type="submit" id="cp-compare">Compare selected runs</button>'
        f'<div id="cp-runs-table">{_table(request, runs) if runs else ""}</div></form>'
        f"{empty}{nav}"
    )
    return page(request, "Runs", body, nav="runs")


def routes() -> list[BaseRoute]:
    """This page's routes."""
    return [Route("/", runs_page, name="runs")]
