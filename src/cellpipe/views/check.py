"""The ``cellpipe check --json`` documents: a valid pipeline, or what was wrong.

Owns: `success_document` and `failure_document` (every problem with its code, cell, line,
step and hint) and `problems_of` (the problems an error carries).

Must not depend on: api, cli, ui.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cellpipe.errors import CellpipeError, NotebookParseError, Problem

if TYPE_CHECKING:
    from cellpipe.pipeline import JsonValue, Pipeline


def problems_of(error: CellpipeError) -> tuple[Problem, ...]:
    """Return the problems an error carries (``PipelineValidationError`` and friends), if any."""
    problems: Any = getattr(error, "problems", None)
    if not problems:
        return ()
    return tuple(p for p in problems if isinstance(p, Problem))


def success_document(pipeline: Pipeline) -> dict[str, JsonValue]:
    """Return the ``--json`` document of a valid pipeline.

    Args:
        pipeline: the checked pipeline.

    Returns:
        ``{"ok": true, ...Pipeline.to_json()..., "errors": []}``.
    """
    document: dict[str, JsonValue] = {"ok": True}
    document.update(pipeline.to_json())
    document["errors"] = []
    return document


def failure_document(
    notebook: str, error: CellpipeError, *, warnings: Sequence[Problem] = ()
) -> dict[str, JsonValue]:
    """Return the ``--json`` document of a notebook that could not be checked.

    Args:
        notebook: the notebook path as given.
        error: what went wrong; each of its problems becomes one entry of ``errors``.
        warnings: non-fatal problems found on the way.

    Returns:
        ``{"ok": false, "path": ..., "errors": [...], "warnings": [...]}`` where each error has
        ``code``, ``message``, ``cell``, ``line``, ``step`` and ``hint``.
    """
    problems = problems_of(error)
    errors: list[JsonValue]
    if problems:
        errors = [_as_json(p.to_json()) for p in problems]
    else:
        errors = [
            {
                "code": _error_code(error),
                "message": _bare_message(error),
                "cell": getattr(error, "cell", None),
                "line": getattr(error, "line", None),
                "step": None,
                "hint": error.hint,
            }
        ]
    return {
        "ok": False,
        "path": notebook,
        "errors": errors,
        "warnings": [_as_json(w.to_json()) for w in warnings],
    }


def _as_json(value: dict[str, object]) -> JsonValue:
    # Problem.to_json() is typed loosely (dict[str, object]); its values are JSON scalars.
    return value  # type: ignore[return-value]


def _bare_message(error: CellpipeError) -> str:
    # NotebookParseError puts "path, cell N, line L: " in front of its message; in JSON the
    # location has its own fields, as it has for every other problem.
    if isinstance(error, NotebookParseError):
        where = error.path
        if error.cell is not None:
            where += f", cell {error.cell}"
        if error.line is not None:
            where += f", line {error.line}"
        return error.message.removeprefix(f"{where}: ")
    return error.message


def _error_code(error: CellpipeError) -> str:
    code = getattr(error, "code", None)
    if isinstance(code, str):
        return code
    if isinstance(error, NotebookParseError):
        return "parse-error"
    name = type(error).__name__.removesuffix("Error") or "Cellpipe"
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in name).lstrip("-")
