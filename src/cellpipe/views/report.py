"""A run as one self-contained HTML page: ``cellpipe report RUN``.

Owns: `report_html` (header + the executed notebook rendered by nbconvert), `run_graph` (the
run's steps and data edges as `GraphNode`s and edges, from its step runs) and
`strip_remote_assets`.

The page is: a header (run id, pipeline, notebook, status, times, the graph drawn by
`cellpipe.views.graph.graph_svg`, parameters, metrics, each step's status and cache decision),
then the run's executed notebook (``run.ipynb``: the preamble, the notebook's markdown in its
place, every step's cells with their outputs) rendered by nbconvert's ``HTMLExporter`` (the
``lab`` template) with images embedded.

Invariants: the page fetches nothing when it is opened: images are ``data:`` URIs, the
template's CSS is inline, and the template's references to a CDN (RequireJS, MathJax,
Mermaid) are taken out (`strip_remote_assets`); so math is shown as its TeX source and
Mermaid blocks as text. Every value of the header is escaped. nbconvert (the ``report``
extra) is imported only here, when a page is made; its absence is a `CellpipeError` naming
the extra.

Must not depend on: api, cli, ui.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from cellpipe.errors import CellpipeError
from cellpipe.views.graph import GraphNode, graph_svg

if TYPE_CHECKING:
    from cellpipe.storage.records import RunRecord, StepRunRecord

__all__ = ["ReportError", "report_html", "run_graph", "strip_remote_assets"]


class ReportError(CellpipeError):
    """The HTML report cannot be made (nbconvert missing, or it failed on the notebook)."""

    headline = "cannot write the report"


def run_graph(
    steps: Sequence[StepRunRecord],
) -> tuple[list[GraphNode], list[tuple[str, str, str]]]:
    """Return a run's steps (state = status) and its data edges, labelled by variable.

    An edge comes from each step run's ``input_sources`` (input variable -> the step that
    produced it in this run); order-only edges (``prev:``) are not recorded per run.
    """
    names = {r.step for r in steps}
    nodes = [
        GraphNode(
            id=r.step,
            label=r.step,
            state=r.status.value,
            detail=_short_reason(r.cache_reason),
        )
        for r in steps
    ]
    edges: list[tuple[str, str, str]] = []
    for record in steps:
        by_source: dict[str, list[str]] = {}
        for variable, source in sorted(record.input_sources.items()):
            if source in names and source != record.step:
                by_source.setdefault(source, []).append(variable)
        for source, variables in by_source.items():
            edges.append((source, record.step, ", ".join(variables)))
    return nodes, edges


def _short_reason(reason: str) -> str:
    first = reason.splitlines()[0] if reason else ""
    return first if len(first) <= 40 else first[:39] + "…"


_REMOTE_SCRIPT = re.compile(
    r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>.*?</script\s*>",
    re.IGNORECASE | re.DOTALL,
)
_REMOTE_IMPORT = re.compile(
    r"<script\b[^>]*>(?:(?!</script).)*?(?:import\(\s*[\"']https?://|[\"']https?://[^\"']*\.m?js[\"'])"
    r"(?:(?!</script).)*?</script\s*>",
    re.IGNORECASE | re.DOTALL,
)
_REMOTE_LINK = re.compile(
    r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE | re.DOTALL
)


def strip_remote_assets(page: str) -> str:
    """Remove what a page would fetch from elsewhere when it is opened.

    That is ``<script src=http...>``, scripts that import code from a URL, and
    ``<link href=http...>`` (style sheets, fonts).
    """
    for pattern in (_REMOTE_SCRIPT, _REMOTE_IMPORT, _REMOTE_LINK):
        page = pattern.sub("", page)
    return page


_STYLE = """
.cp-report{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;
margin:16px auto 24px;padding:0 16px;color:#111827}
.cp-report h1{font-size:22px;margin:8px 0}
.cp-report h2{font-size:16px;margin:18px 0 6px}
.cp-report table{border-collapse:collapse;font-size:13px;margin:4px 0}
.cp-report th,.cp-report td{border:1px solid #e5e7eb;padding:3px 8px;text-align:left;
vertical-align:top}
.cp-report th{background:#f9fafb}
.cp-report .cp-status{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px}
.cp-report .cp-meta{color:#4b5563;font-size:13px}
.cp-report code{font-size:12px}
"""

_STATUS_STYLE = {
    "succeeded": "background:#dcfce7;color:#14532d",
    "failed": "background:#fee2e2;color:#7f1d1d",
    "cancelled": "background:#fef9c3;color:#713f12",
    "interrupted": "background:#fef9c3;color:#713f12",
    "running": "background:#dbeafe;color:#1e3a8a",
}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    import json

    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _table(rows: Iterable[tuple[Any, ...]], header: Sequence[str], empty: str) -> str:
    body = [
        "<tr>" + "".join(f"<td>{escape(_text(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    ]
    if not body:
        return f'<p class="cp-meta">{escape(empty)}</p>'
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
    return f"<table>{head}{''.join(body)}</table>"


def report_header(run: RunRecord, steps: Sequence[StepRunRecord]) -> str:
    """Return the header section of the page: run, graph, parameters, metrics, steps."""
    status = run.status.value
    times = f"started {run.started_at.isoformat(timespec='seconds')}"
    if run.finished_at is not None:
        seconds = (run.finished_at - run.started_at).total_seconds()
        times += f", took {seconds:.1f} s"
    nodes, edges = run_graph(steps)
    metrics: dict[str, Any] = dict(run.metrics)
    for record in steps:
        for name, value in record.metrics.items():
            metrics.setdefault(name, value)
    parts = [
        f'<section class="cp-report" id="cellpipe-run"><style>{_STYLE}</style>',
        f"<h1>run <code>{escape(run.run_id)}</code> "
        f'<span class="cp-status" style="{_STATUS_STYLE.get(status, "background:#f3f4f6")}">'
        f"{escape(status)}</span></h1>",
        f'<p class="cp-meta">pipeline {escape(run.pipeline)} · notebook '
        f"<code>{escape(run.notebook)}</code> · {escape(times)}</p>",
    ]
    if run.error:
        parts.append(f'<p style="color:#7f1d1d">{escape(run.error)}</p>')
    parts += [
        "<h2>Graph</h2>",
        graph_svg(nodes, edges, title=f"run {run.run_id}"),
        "<h2>Parameters</h2>",
        _table(sorted(run.parameters.items()), ("name", "value"), "no parameters"),
        "<h2>Metrics</h2>",
        _table(sorted(metrics.items()), ("name", "value"), "no metrics"),
        "<h2>Steps</h2>",
        _table(
            ((r.step, r.status.value, r.cache_reason or "", ", ".join(r.outputs)) for r in steps),
            ("step", "status", "cache decision", "outputs"),
            "no steps",
        ),
        "<h2>Outputs</h2>",
        "</section>",
    ]
    return "\n".join(parts)


def report_html(
    run: RunRecord, steps: Sequence[StepRunRecord], notebook: Mapping[str, Any] | None
) -> str:
    """Return the whole page: the header, then the executed notebook rendered by nbconvert.

    Args:
        run: the run's record.
        steps: its step runs, in the pipeline's order.
        notebook: the run's executed notebook (nbformat 4 JSON), or None when it is lost
            (the page then says so).

    Raises:
        ReportError: nbconvert is not installed, or it cannot render the notebook.
    """
    try:
        import nbformat
        from nbconvert import HTMLExporter
    except ImportError as exc:
        raise ReportError(
            f"cellpipe report needs nbconvert, which is not installed ({exc})",
            hint="pip install 'cellpipe[report]'",
        ) from exc
    header = report_header(run, steps)
    if notebook is None:
        notebook = {
            "cells": [
                {
                    "cell_type": "markdown",
                    "id": "missing",
                    "metadata": {},
                    "source": "The executed notebook of this run is not on this machine.",
                }
            ],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    exporter = HTMLExporter(template_name="lab", embed_images=True)  # type: ignore[no-untyped-call]
    for trait in ("require_js_url", "mathjax_url", "mermaid_js_url", "jquery_url"):
        if exporter.has_trait(trait):
            setattr(exporter, trait, "")
    quiet = logging.getLogger("traitlets")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "Alternative text is missing on 1 image(s)" and the like
    try:
        node = nbformat.from_dict(dict(notebook))  # type: ignore[no-untyped-call]
        body, _ = exporter.from_notebook_node(node)
    except Exception as exc:  # nbconvert raises many types (template, validation, filters)
        raise ReportError(
            f"nbconvert cannot render the executed notebook of run {run.run_id}: "
            f"{type(exc).__name__}: {exc}",
            hint="open the run's run.ipynb in Jupyter (cellpipe show RUN names it), or run "
            "with --debug and report the traceback",
        ) from exc
    finally:
        quiet.setLevel(level)
    page = strip_remote_assets(body)
    page = re.sub(
        r"<title>.*?</title>",
        f"<title>cellpipe run {escape(run.run_id)}</title>",
        page,
        count=1,
        flags=re.DOTALL,
    )
    match = re.search(r"<body\b[^>]*>", page)
    if match is None:
        return f"<!DOCTYPE html><html><body>{header}{page}</body></html>"
    return page[: match.end()] + "\n" + header + "\n" + page[match.end() :]
