"""How CLI output looks: one JSON document, plain text, or rich tables on a terminal.

Owns: writing command results to a stream and turning errors and problems into text.

Invariants: ``--json`` output is exactly one JSON document followed by a newline, with keys in
a stable order, and strict JSON (NaN and infinity are written as null, never as ``NaN``), so it
can be piped and compared; ``rich`` is imported only when the stream is an interactive terminal
(never for JSON, never when piped), which keeps ``cellpipe check`` fast and its piped output
free of escape codes. Plain and rich output carry the same information.

The value formatting (`short_value`, `dumps`, `plural`, `cell_ranges`) lives in
`cellpipe.views.format` and is re-exported here for the commands.

Must not depend on: anything in cellpipe but ``errors`` and ``views`` (commands pass plain
strings in).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from cellpipe.errors import CellpipeError, Problem
from cellpipe.views.check import problems_of
from cellpipe.views.format import (
    EMPTY,
    VALUE_WIDTH,
    cell_ranges,
    dumps,
    finite,
    join,
    plural,
    short_value,
)

__all__ = [
    "EMPTY",
    "VALUE_WIDTH",
    "Output",
    "cell_ranges",
    "dumps",
    "finite",
    "format_error",
    "format_problem",
    "is_terminal",
    "join",
    "plural",
    "problems_of",
    "secrets_left_out",
    "short_value",
    "write_json",
]


if TYPE_CHECKING:
    from rich.console import Console


def write_json(document: object, stream: TextIO) -> None:
    """Write ``document`` as indented JSON plus a newline (NaN and infinity as null).

    Args:
        document: a JSON-ready value (dicts keep their insertion order).
        stream: where to write, usually ``sys.stdout``.
    """
    stream.write(dumps(document, indent=2, ensure_ascii=False))
    stream.write("\n")


def is_terminal(stream: TextIO) -> bool:
    """Return True if ``stream`` is an interactive terminal that wants formatting."""
    if os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Output:
    """Headings, lines and tables, rendered with rich on a terminal and as plain text otherwise.

    Args:
        stream: where to write.
        rich: force rich rendering on or off; by default it is on for terminals only.

    Example::

        out = Output(sys.stdout)
        out.heading("Steps")
        out.table(["step", "cells"], [["load", "2-3"]])
    """

    def __init__(self, stream: TextIO, *, rich: bool | None = None) -> None:
        self._stream = stream
        self._console: Console | None = None
        if is_terminal(stream) if rich is None else rich:
            from rich.console import Console

            self._console = Console(file=stream, highlight=False)

    def line(self, text: str = "", *, style: str | None = None) -> None:
        """Write one line of text (never interpreted as rich markup)."""
        if self._console is None:
            self._stream.write(text + "\n")
        else:
            self._console.print(text, style=style, markup=False, highlight=False)

    def heading(self, text: str) -> None:
        """Write a section heading, preceded by a blank line."""
        self.line()
        self.line(text, style="bold")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Write a table; an empty table is written as ``(none)``.

        Args:
            columns: the column headers.
            rows: the cells, already formatted as strings.
        """
        if not rows:
            self.line("  (none)", style="dim")
            return
        if self._console is not None:
            self._rich_table(columns, rows)
            return
        widths = [len(c) for c in columns]
        for row in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        for row in [columns, *rows]:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
            self._stream.write(("  " + "  ".join(cells)).rstrip() + "\n")

    def _rich_table(self, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        from rich.table import Table
        from rich.text import Text

        assert self._console is not None  # only called when rendering with rich
        table = Table(box=None, pad_edge=True, header_style="bold", show_edge=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        self._console.print(table)


def format_problem(problem: Problem, *, path: str | None = None) -> str:
    """Return a problem as ``path, cell 4, line 2: message`` plus an indented hint line.

    Args:
        problem: the problem to format.
        path: the notebook, prefixed to the location when given.
    """
    where = ", ".join(part for part in (path, problem.where()) if part)
    text = f"{where}: {problem.message}" if where else problem.message
    if problem.hint:
        text += f"\n    hint: {problem.hint}"
    return text


def format_error(error: CellpipeError) -> str:
    """Return the text the CLI prints on stderr for an error: headline, message, hint.

    An error that carries problems is printed as one block per problem, so every problem
    shows its cell, line and hint.

    Args:
        error: the error to describe.
    """
    problems = problems_of(error)
    if not problems:
        lines = [f"error: {error.headline}"]
        lines.extend(f"  {line}" for line in error.message.splitlines())
        if error.hint:
            lines.append(f"  hint: {error.hint}")
        return "\n".join(lines)
    path: str | None = getattr(error, "path", None)
    noun = "error" if len(problems) == 1 else "errors"
    lines = [f"error: {error.headline} ({len(problems)} {noun})"]
    lines.extend(format_problem(p, path=path) for p in problems)
    return "\n".join(lines)


def secrets_left_out(paths: Sequence[str], out: Output) -> None:
    """Say which workspace files snapshots leave out as secrets (nothing when there are none).

    Args:
        paths: workspace-relative paths (folders end in ``/``).
        out: where to write.
    """
    if not paths:
        return
    shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
    out.line("")
    out.line(
        f"left out of snapshots as secrets: {shown} "
        "(take one back with !PATTERN in .cellpipeignore)",
        style="yellow",
    )
