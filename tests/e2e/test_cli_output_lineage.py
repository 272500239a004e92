"""Issue 9: lineage per step output (equal values share a digest) and non-scalar metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

NOTEBOOK = """\
# %% tags=["imports"]
import numpy as np

# %% tags=["step:one"]
a = 0

# %% tags=["step:two"]
b = 0

# %% tags=["step:use_a"]
x = a + 1

# %% tags=["step:use_b"]
y = b + 2

# %% tags=["step:evaluate"]
cm = np.array([[5, 1], [0, 4]])
report = {"cat": {"precision": 0.5, "recall": float("nan")}, "labels": list(range(40))}
model = object()

# %% tags=["pipeline-metrics"]
x
cm
report
model
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> tuple[Path, str, str]:
    folder = tmp_path / "equal"
    folder.mkdir()
    (folder / "equal.py").write_text(NOTEBOOK)
    monkeypatch.chdir(folder)
    result = run_cli("run", folder / "equal.py", "--json")
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    return folder, lines[-1]["run_id"], result.out


def _producers_of_inputs(doc: dict) -> dict[str, str]:
    """Consumer step -> the producer step its input edge names."""
    nodes = {n["id"]: n for n in doc["nodes"]}
    return {
        nodes[e["target"]]["step"]: nodes[e["producer"]]["step"]
        for e in doc["edges"]
        if e["producer"] is not None
    }


def test_equal_outputs_share_a_digest_but_each_input_names_its_own_producer(project, run_cli):
    folder, run_id, _ = project
    show = run_cli("show", run_id, "--project", folder, "--json").json()
    outputs = {s["step"]: s["outputs"] for s in show["steps"]}
    assert outputs["one"]["a"]["digest"] == outputs["two"]["b"]["digest"]  # the premise
    doc = run_cli("lineage", run_id, "--project", folder, "--json").json()
    assert _producers_of_inputs(doc) == {"use_a": "one", "use_b": "two"}
    text = run_cli("lineage", run_id, "--project", folder).out
    assert f"in   a = {outputs['one']['a']['digest'][7:19]} (int)  from one in {run_id}" in text
    assert f"in   b = {outputs['one']['a']['digest'][7:19]} (int)  from two in {run_id}" in text


@pytest.mark.parametrize(
    ("step", "variable", "producer", "reader", "other"),
    [("one", "a", "one", "use_a", "two"), ("two", "b", "two", "use_b", "one")],
)
def test_lineage_of_each_output_names_its_own_producer_and_readers(
    project, run_cli, step, variable, producer, reader, other
):
    folder, run_id, _ = project
    doc = run_cli("lineage", run_id, step, variable, "--project", folder, "--json").json()
    assert doc["root"] == f"{run_id}/{step}/{variable}"
    assert doc["root_kind"] == "output"
    steps = {n["step"] for n in doc["nodes"] if n["kind"] == "step_run"}
    assert steps == {producer, reader}
    assert other not in steps


def test_lineage_of_a_shared_digest_lists_every_producer(project, run_cli):
    folder, run_id, _ = project
    show = run_cli("show", run_id, "--project", folder, "--json").json()
    digest = next(s["outputs"]["a"]["digest"] for s in show["steps"] if s["step"] == "one")
    doc = run_cli("lineage", digest, "--project", folder, "--json").json()
    producers = {
        n["step"]
        for n in doc["nodes"]
        for e in doc["edges"]
        if e["source"] == n["id"] and e["target"] == f"artifact:{digest}"
    }
    assert producers == {"one", "two"}
    readers = {n["step"] for n in doc["nodes"] if n["kind"] == "step_run"} - producers
    assert readers == {"use_a", "use_b"}


def test_output_lineage_errors_name_the_fix(project, run_cli):
    folder, run_id, _ = project
    missing = run_cli("lineage", run_id, "one", "nope", "--project", folder)
    assert missing.code == 1
    assert "step 'one' of run" in missing.err
    assert "has no output 'nope'" in missing.err
    assert "its outputs: a" in missing.err
    half = run_cli("lineage", run_id, "one", "--project", folder)
    assert half.code == 2
    assert "needs the output variable too" in half.err


def test_non_scalar_metrics_are_recorded_shown_and_compared(project, run_cli):
    folder, run_id, _ = project
    warning = "cellpipe warning: metric 'model' of step 'evaluate' was not recorded"
    log = run_cli("logs", run_id, "evaluate", "--project", folder)
    assert warning in log.out  # the step's log says so ...
    doc = run_cli("show", run_id, "--project", folder, "--json").json()
    assert doc["metrics"] == {
        "x": 1,
        "cm": [[5, 1], [0, 4]],
        "report": {"cat": {"precision": 0.5, "recall": None}, "labels": list(range(40))},
    }
    text = run_cli("show", run_id, "--project", folder).out
    assert "[[5, 1], [0, 4]]" in text
    report_line = next(line for line in text.splitlines() if line.strip().startswith("report"))
    assert "... (" in report_line
    assert len(report_line.strip()) < 80
    again = run_cli("run", folder / "equal.py", "--no-cache")
    assert again.code == 0, again.err
    assert f"[evaluate] {warning}" in again.out  # ... and so does the run's output
    second = run_cli("runs", "--project", folder, "--json").json()["runs"][0]["run_id"]
    assert second != run_id
    compared = run_cli("compare", run_id, second, "--project", folder, "--json").json()
    rows = {row["name"]: row for row in compared["metrics"]}
    assert rows["cm"]["values"] == [[[5, 1], [0, 4]], [[5, 1], [0, 4]]]
    assert rows["cm"]["differs"] is False
    assert "[[5, 1], [0, 4]]" in run_cli("compare", run_id, second, "--project", folder).out
    listing = run_cli("runs", "--project", folder)
    assert listing.code == 0
    assert "cm=[[5, 1], [0, 4]]" in listing.out
    assert run_cli("runs", "--project", folder, "--metric", "x>0", "--json").json()["runs"]


PARAMETER_METRIC = """\
# %% tags=["pipeline-parameters"]
LR = 0.1

# %% tags=["step:train"]
score = LR * 2

# %% tags=["pipeline-metrics"]
score
LR
"""


def test_a_parameter_named_as_a_metric_is_the_runs_value(tmp_path, monkeypatch, run_cli):
    notebook = tmp_path / "pm.py"
    notebook.write_text(PARAMETER_METRIC)
    monkeypatch.chdir(tmp_path)
    result = run_cli("run", notebook, "-p", "LR=0.5", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out.splitlines()[-1])["metrics"] == {"score": 1.0, "LR": 0.5}
