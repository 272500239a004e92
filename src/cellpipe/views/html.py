"""Small HTML building blocks of the notebook views: tables, sections, key-value lists.

Owns: the one place HTML is written for ``_repr_html_``: every value goes through
`html.escape`; styles are inline (a notebook's CSS and a sanitising front end keep them); no
script, no stylesheet link, nothing fetched from the internet.

Must not depend on: anything in cellpipe but `cellpipe.views.format`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence

from cellpipe.views.format import short_value

_TABLE = "border-collapse:collapse;font-size:12px;margin:4px 0 10px 0"
_CELL = "border:1px solid #d0d7de;padding:2px 8px;text-align:left;vertical-align:top"
_HEAD = _CELL + ";background:#f6f8fa;font-weight:600"
_MARK = "background:#fff8c5"


def escape(value: object) -> str:
    """Return ``value`` as text, escaped for HTML (quotes included)."""
    return html.escape(str(value), quote=True)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    title: str | None = None,
    marked: Sequence[bool] | None = None,
) -> str:
    """Return an HTML table (``(none)`` when there are no rows).

    Args:
        columns: the headers.
        rows: the cells; strings are shown as they are, other values with `short_value`.
        title: a small heading above the table.
        marked: per row, True to highlight it (values that differ in ``compare``).
    """
    rows = list(rows)
    parts = [f"<div style='margin:2px 0;font-weight:600'>{escape(title)}</div>"] if title else []
    if not rows:
        parts.append("<div style='color:#57606a;font-size:12px'>(none)</div>")
        return "".join(parts)
    parts.append(f"<table style='{_TABLE}'><thead><tr>")
    parts.extend(f"<th style='{_HEAD}'>{escape(c)}</th>" for c in columns)
    parts.append("</tr></thead><tbody>")
    for index, row in enumerate(rows):
        style = f" style='{_MARK}'" if marked is not None and marked[index] else ""
        parts.append(f"<tr{style}>")
        parts.extend(f"<td style='{_CELL}'>{escape(_cell(v))}</td>" for v in row)
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _cell(value: object) -> str:
    return value if isinstance(value, str) else short_value(value)


def pairs(items: Mapping[str, object], *, title: str | None = None) -> str:
    """Return a two-column table of names and values."""
    return table(["name", "value"], [[k, v] for k, v in items.items()], title=title)


def section(heading: str, *parts: str) -> str:
    """Return a block with a heading and the given (already escaped) HTML parts."""
    body = "".join(parts)
    return (
        "<div style='font-family:system-ui,-apple-system,sans-serif;font-size:13px'>"
        f"<div style='font-weight:700;margin:4px 0'>{escape(heading)}</div>{body}</div>"
    )


def preformatted(text: str) -> str:
    """Return text in a scrolling ``<pre>`` block."""
    return (
        "<pre style='max-height:24em;overflow:auto;background:#f6f8fa;padding:6px;"
        f"font-size:12px'>{escape(text)}</pre>"
    )
