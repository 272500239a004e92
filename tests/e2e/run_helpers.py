"""Helpers for the `cellpipe run` end-to-end tests: tiny notebooks and JSON output parsing."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import nbformat

from cellpipe.notebook.parse import read_notebook
from cellpipe.runner.context import metrics_outside_run

Cells = list[tuple[list[str], str]]

# A small stdlib pipeline (cell numbers as Jupyter shows them, markdown included):
#   1 markdown, 2 imports, 3 parameters, 4 functions, 5 a, 6 b, 7 c, 8 d, 9 metrics
#   a reads A; b reads B and x; c reads x; d reads y and z.
BASIC: Cells = [
    (["markdown"], "# basic"),
    (["imports"], "import cellpipe"),
    (["pipeline-parameters"], 'A = 1\nB = 2\nNAME = "plain"'),
    (["functions"], "def double(v):\n    return 2 * v"),
    (["step:a"], "x = double(A)"),
    (["step:b", "prev:a"], "y = x + B"),
    (["step:c", "prev:a"], "z = x * 10"),
    (["step:d"], 'total = y + z\ncellpipe.log_metric("twice", total * 2)\nprint("total", total)'),
    (["pipeline-metrics"], "total"),
]


def write_notebook(folder: Path, cells: Cells, name: str = "nb.ipynb") -> Path:
    """Write an .ipynb whose cells carry the given tags (["markdown"] makes a markdown cell)."""
    nb = nbformat.v4.new_notebook()
    for tags, source in cells:
        if tags == ["markdown"]:
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
            continue
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(nb, path)
    return path


def replace_cell(path: Path, number: int, source: str) -> None:
    """Replace the source of cell ``number`` (1-based, markdown included)."""
    nb = nbformat.read(path, as_version=4)
    nb.cells[number - 1].source = source
    nbformat.write(nb, path)


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def summary(out: str) -> dict[str, Any]:
    last = json_lines(out)[-1]
    assert last["event"] == "summary", last
    return last


def statuses(out: str) -> dict[str, str]:
    return {name: s["status"] for name, s in summary(out)["steps"].items()}


def reasons(out: str) -> dict[str, str]:
    return {name: s["reason"] for name, s in summary(out)["steps"].items()}


def script_metrics(notebook: Path) -> dict[str, Any]:
    """Run the notebook's non-skip code cells top to bottom as one plain script.

    Returns the pipeline-metrics values and the `cellpipe.log_metric` values, as a run
    records them (logged names win, like the runner's summary).
    """
    source = read_notebook(notebook)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    metric_names: list[str] = []
    logged = metrics_outside_run()
    logged.clear()
    cwd = Path.cwd()
    os.chdir(notebook.parent)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for cell in source.cells:
                tags = {str(t) for t in cell.tags}
                if cell.kind != "code" or "skip" in tags:
                    continue
                if "pipeline-metrics" in tags:
                    metric_names += _metric_names(cell.source)
                exec(
                    compile(cell.source, f"{notebook.name} [cell {cell.number}]", "exec"), namespace
                )
    finally:
        os.chdir(cwd)
        import sys

        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
    values: dict[str, Any] = {name: _scalar(namespace[name]) for name in metric_names}
    values.update(logged)
    logged.clear()
    return values


def _metric_names(source: str) -> list[str]:
    import ast

    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id not in ("print",):
            names.append(node.id)
    return names


def _scalar(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value
