"""Issue 10, item 8: NaN and infinite metrics give valid JSON from every ``--json``; NaN and
infinite ``-p`` values and deeply nested lists are a clear parameter error.

Every document is read with a strict parser: Python's ``json`` accepts ``NaN`` and
``Infinity`` by default, which no other JSON parser does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from run_helpers import json_lines, summary, write_notebook

pytestmark = pytest.mark.e2e

NON_FINITE = [
    (["imports"], "import math\n\nimport cellpipe"),
    (["pipeline-parameters"], "RATE = 0.5\nLAYERS = [1, 2]"),
    (
        ["step:train"],
        "model = {'rate': RATE}\n"
        "loss = float('nan')\n"
        "gain = math.inf\n"
        "scores = [1.0, float('-inf'), float('nan')]\n"
        "cellpipe.log_metric('drop', -math.inf)\n"
        "cellpipe.register_model(model, 'nanny')",
    ),
    (["pipeline-metrics"], "loss\ngain\nscores"),
]


def _refuse(constant: str) -> Any:
    raise AssertionError(f"{constant} in a --json document: not valid JSON")


def strict(text: str) -> Any:
    return json.loads(text, parse_constant=_refuse)


@pytest.mark.slow
def test_nan_and_infinite_metrics_are_null_in_every_json_output(run_cli, tmp_path, monkeypatch):
    notebook = write_notebook(tmp_path / "proj", NON_FINITE)
    monkeypatch.chdir(notebook.parent)

    first = run_cli("run", notebook, "--json")
    assert first.code == 0, first.err
    for line in first.out.splitlines():
        strict(line)
    done = summary(first.out)
    expected = {"loss": None, "gain": None, "scores": [1.0, None, None], "drop": None}
    assert done["metrics"] == expected
    run_id = done["run_id"]
    second = run_cli("run", notebook, "-p", "RATE=0.25", "--json")
    assert second.code == 0, second.err
    other = summary(second.out)["run_id"]

    outputs = {
        "runs": run_cli("runs", "--json"),
        "show": run_cli("show", run_id, "--json"),
        "why": run_cli("why", run_id, "train", "--json"),
        "compare": run_cli("compare", run_id, other, "--json"),
        "lineage": run_cli("lineage", run_id, "--json"),
        "lineage-var": run_cli("lineage", run_id, "train", "loss", "--json"),
        "models list": run_cli("models", "list", "--json"),
        "models show": run_cli("models", "show", "nanny:1", "--json"),
    }
    for command, result in outputs.items():
        assert result.code == 0, (command, result.err)
        strict(result.out)
    shown = strict(outputs["show"].out)
    assert shown["metrics"]["loss"] is None
    assert strict(outputs["models show"].out)["metrics"] == {"drop": None}  # logged before


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_a_non_finite_parameter_is_a_clear_error(run_cli, tmp_path, monkeypatch, value):
    notebook = write_notebook(tmp_path / "proj", NON_FINITE)
    monkeypatch.chdir(notebook.parent)
    result = run_cli("run", notebook, "-p", f"RATE={value}", "--json")
    assert result.code == 2, result.err
    assert "is not a finite number" in result.err
    assert "this is a bug" not in result.err
    assert not json_lines(result.out) or "run_id" not in json_lines(result.out)[-1]


def test_a_3000_deep_list_parameter_is_a_clear_error(run_cli, tmp_path, monkeypatch):
    notebook = write_notebook(tmp_path / "proj", NON_FINITE)
    monkeypatch.chdir(notebook.parent)
    deep = "[" * 3000 + "]" * 3000
    result = run_cli("run", notebook, "-p", f"LAYERS={deep}")
    assert result.code == 2, result.err
    assert "nests lists or dicts more than 100 levels deep" in result.err
    assert "this is a bug" not in result.err
