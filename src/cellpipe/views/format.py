"""How values look in every view: strict JSON, short table text, counts, cell ranges, sizes.

Owns: the small formatting helpers the documents, the text renderers (CLI) and the HTML views
share, so a number prints the same in ``runs``, ``show``, ``compare`` and a notebook table.

Invariants: pure functions; JSON is strict (NaN and infinity become null, never ``NaN``).

Must not depend on: anything in cellpipe.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

EMPTY = "-"

VALUE_WIDTH = 60
"""The most characters a parameter or metric value takes in a text table (``--json`` shows it
whole)."""


def plural(count: int, noun: str) -> str:
    """Return ``1 step``, ``2 steps``: the count and the noun, plural unless the count is 1."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def finite(value: object) -> object:
    """Return ``value`` with every NaN and infinite float replaced by None, at any depth.

    JSON has no such numbers (``json.dumps`` would write ``NaN``, which strict parsers refuse);
    None is how the run records store them already (`cellpipe.storage.metric_values`).
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def dumps(document: object, **options: Any) -> str:
    """Return ``document`` as strict JSON text (NaN and infinity as null); see `finite`."""
    return json.dumps(finite(document), allow_nan=False, **options)


def short_value(value: object, *, width: int = VALUE_WIDTH, float_format: str = ".6g") -> str:
    """Return a recorded value (a metric or parameter) as table text, at most ``width`` long.

    Every text view of a value goes through here (`runs`, `show`, `compare`, the run
    summary, the notebook tables), so a number prints the same everywhere.

    Numbers are formatted with ``float_format``; lists and dicts (a confusion matrix, a
    classification report) are written as compact JSON; ``null`` (how NaN and infinity are
    recorded) as ``null``. Longer text is cut and ends with ``...`` and the full length.

    Args:
        value: a JSON value.
        width: the most characters returned.
        float_format: the format of floats.
    """
    if isinstance(value, float):
        text = format(value, float_format)
    elif isinstance(value, list | dict):
        text = dumps(value, ensure_ascii=False)
        if len(text) > width:
            text = dumps(value, ensure_ascii=False, separators=(",", ":"))
    elif value is None:
        text = "null"
    else:
        text = str(value)
    text = " ".join(text.split())  # one line
    if len(text) > width:
        suffix = f"... ({len(text)} chars)"
        text = text[: max(width - len(suffix), 1)] + suffix
    return text


def join(items: Iterable[str]) -> str:
    """Return ``a, b, c``, or ``-`` when there is nothing."""
    text = ", ".join(items)
    return text or EMPTY


def cell_ranges(cells: Sequence[int]) -> str:
    """Return cell numbers as compact ranges: ``[3, 4, 5, 8]`` becomes ``3-5, 8``."""
    parts: list[str] = []
    start: int | None = None
    previous: int | None = None
    for cell in sorted(cells):
        if start is not None and previous is not None and cell == previous + 1:
            previous = cell
            continue
        if start is not None:
            parts.append(_range(start, previous))
        start = previous = cell
    if start is not None:
        parts.append(_range(start, previous))
    return join(parts)


def _range(start: int, end: int | None) -> str:
    return str(start) if end is None or end == start else f"{start}-{end}"


def size_text(size: int) -> str:
    """Return a byte count as ``512 B``, ``1.5 KiB``, ``3.2 MiB`` or ``1.0 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def when_text(iso: str | None) -> str:
    """Return an ISO timestamp as ``2026-12-03 16:15:45`` (``-`` for None)."""
    return iso[:19].replace("T", " ") if iso else EMPTY


def duration_text(seconds: float | None, digits: int = 1) -> str:
    """Return a duration as ``1.2s`` (``-`` for None)."""
    return f"{seconds:.{digits}f}s" if seconds is not None else EMPTY
