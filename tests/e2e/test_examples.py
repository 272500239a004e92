"""The example notebooks run top to bottom as plain Python (every code cell, in order)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.e2e


def run_code_cells(notebook: Path) -> dict[str, object]:
    nb = nbformat.read(notebook, as_version=4)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "code":
            exec(compile(cell.source, f"{notebook.name}, cell {number}", "exec"), namespace)
    return namespace


def test_examples_are_clean_notebooks(examples):
    for notebook in sorted(examples.glob("*/*.ipynb")):
        nb = nbformat.read(notebook, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{notebook.name} has outputs"
                assert cell.execution_count is None, f"{notebook.name} has execution counts"


def test_diamond_notebook_and_script_run(examples):
    with contextlib.redirect_stdout(io.StringIO()):
        namespace = run_code_cells(examples / "diamond" / "diamond.ipynb")
        script = examples / "diamond" / "diamond.py"
        script_namespace: dict[str, object] = {"__name__": "__main__"}
        exec(compile(script.read_text(encoding="utf-8"), str(script), "exec"), script_namespace)

    assert namespace["summary"] == script_namespace["summary"]


@pytest.mark.slow
def test_wine_notebook_runs(examples, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    plt = pytest.importorskip("matplotlib.pyplot")
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            namespace = run_code_cells(examples / "wine" / "wine.ipynb")
    finally:
        plt.close("all")

    assert 0.8 < float(namespace["forest_acc"]) <= 1.0  # type: ignore[arg-type]
    assert 0.8 < float(namespace["logreg_acc"]) <= 1.0  # type: ignore[arg-type]
    assert "best model:" in out.getvalue()
