"""`cellpipe.run` and `cellpipe.load`: the Python face of the local runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_helpers import BASIC, write_notebook

import cellpipe
from cellpipe.errors import CellpipeError, ParameterError, RunFailedError, RunNotFoundError

pytestmark = pytest.mark.e2e


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    return write_notebook(tmp_path / "proj", BASIC)


@pytest.mark.slow
def test_run_returns_status_metrics_and_loads_outputs(notebook, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = cellpipe.run(notebook, params={"A": 2})
    assert run.status == "succeeded"
    assert run.metrics == {"total": 4 + 2 + 40, "twice": 92}
    assert run.steps == {"a": "succeeded", "b": "succeeded", "c": "succeeded", "d": "succeeded"}
    assert run.load("a", "x") == 4
    assert cellpipe.load(run.run_id, "c", "z", project=notebook.parent) == 40
    assert cellpipe.load(run.run_id[:-2], "b", "y", project=notebook.parent) == 6
    assert run.notebook is not None
    assert run.notebook.is_file()
    again = cellpipe.run(notebook, params={"A": 2})
    assert set(again.steps.values()) == {"cached"}
    assert again.load("a", "x") == 4
    assert repr(again).startswith(f"<cellpipe.Run {again.run_id} succeeded")


def test_bad_params_raise_before_anything_runs(notebook):
    with pytest.raises(ParameterError, match="parameter A is an int"):
        cellpipe.run(notebook, params={"A": "one"})
    with pytest.raises(ParameterError, match="has no parameter 'Z'"):
        cellpipe.run(notebook, params={"Z": 1})
    assert not (notebook.parent / ".cellpipe").exists()


@pytest.mark.slow
def test_load_errors_name_what_is_missing(notebook):
    run = cellpipe.run(notebook, executor="inprocess")
    assert run.status == "succeeded"
    with pytest.raises(RunNotFoundError, match="has no output 'nope'"):
        run.load("a", "nope")
    with pytest.raises(RunNotFoundError, match="has no step 'zz'"):
        cellpipe.load(run.run_id, "zz", "x", project=notebook.parent)
    with pytest.raises(RunNotFoundError, match="no run 'missing'"):
        cellpipe.load("missing", "a", "x", project=notebook.parent)


@pytest.mark.slow
def test_failed_run_raises_with_the_run_or_returns_it_when_asked(tmp_path, capsys):
    path = write_notebook(tmp_path / "f", [(["step:a"], "x = 1 / 0"), (["step:b"], "y = x")])
    with pytest.raises(RunFailedError, match="step 'a' failed: ZeroDivisionError") as raised:
        cellpipe.run(path)
    assert isinstance(raised.value, CellpipeError)
    assert raised.value.run.status == "failed"
    assert raised.value.failures[0].step == "a"
    shown = capsys.readouterr().out  # outside Jupyter: the live view is text on stdout
    assert "✗ a failed" in shown
    assert shown.count("Traceback (most recent call last):") == 1
    assert 'File "nb.ipynb [cell 1]", line 1' in shown
    run = cellpipe.run(path, raise_on_error=False, live=False)
    assert capsys.readouterr().out == ""
    assert run.status == "failed"
    assert run.steps == {"a": "failed", "b": "skipped"}
    assert run.error is not None
    assert "ZeroDivisionError" in run.error


@pytest.mark.slow
def test_run_shows_as_html_and_as_a_table(notebook, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cellpipe.run(notebook, live=False)
    run = cellpipe.run(notebook, params={"A": 5}, live=False)
    table = run.to_pandas()
    assert list(table.columns) == ["step", "status", "duration_s", "reason", "source_run"]
    assert list(table["step"]) == ["a", "b", "c", "d"]
    assert table.set_index("step").loc["a", "reason"] == "miss: parameter A changed 1 → 5"
    html = run._repr_html_()
    assert run.run_id in html
    assert "<svg" in html
    assert "parameter A changed 1 → 5" in html
