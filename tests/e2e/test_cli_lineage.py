"""`cellpipe compare`, `logs`, `lineage`, `artifacts get` and `runs --param/--metric`."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_runs(examples, run_cli):
    """Two runs of the diamond example: defaults, then SCALE=5 (b re-runs, d too)."""
    nb = examples / "diamond" / "diamond.py"
    first = run_cli("run", nb, "--json")
    second = run_cli("run", nb, "-p", "SCALE=5", "--json")
    assert first.code == 0, first.err
    assert second.code == 0, second.err
    ids = [json.loads(r.out.splitlines()[-1])["run_id"] for r in (first, second)]
    return examples / "diamond", ids


def test_compare_flags_differences(two_runs, run_cli):
    project, (r1, r2) = two_runs
    result = run_cli("compare", r1, r2, "--project", project, "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["runs"] == [r1, r2]
    params = {row["name"]: row for row in doc["parameters"]}
    assert params["SCALE"]["values"] == [2.5, 5.0]
    assert params["SCALE"]["differs"] is True
    assert params["N"]["differs"] is False
    assert {row["name"] for row in doc["metrics"]} == {"mean", "rms"}
    text = run_cli("compare", r1, r2, "--project", project)
    assert text.code == 0
    assert any(line.lstrip().startswith("*  SCALE") for line in text.out.splitlines())


def test_compare_needs_two_runs(two_runs, run_cli):
    project, (r1, _) = two_runs
    result = run_cli("compare", r1, "--project", project)
    assert result.code == 1
    assert "at least two runs" in result.err


def test_logs(two_runs, run_cli):
    project, (r1, r2) = two_runs
    result = run_cli("logs", r1, "d", "--project", project)
    assert result.code == 0, result.err
    assert "'label': 'diamond'" in result.out
    cached = run_cli("logs", r2, "a", "--project", project, "--json").json()
    assert cached["source_run"] == r1  # a was a cache hit in the second run
    missing = run_cli("logs", r1, "nope", "--project", project)
    assert missing.code == 2  # a usage error (issue 11)
    assert "has no step 'nope'" in missing.err


def test_lineage_of_a_run_in_every_format(two_runs, run_cli):
    project, (_, r2) = two_runs
    doc = run_cli("lineage", r2, "--project", project, "--json").json()
    assert doc["root"] == r2
    assert (doc["limit"], doc["truncated"]) == (None, False)  # a run's graph is never cut
    steps = {n["step"]: n for n in doc["nodes"] if n["kind"] == "step_run"}
    assert set(steps) == {"a", "b", "c", "d"}
    assert steps["a"]["status"] == "cached"
    assert steps["b"]["status"] == "succeeded"
    labels = {e["label"] for e in doc["edges"]}
    assert {"numbers", "mean", "spread", "rms"} <= labels
    mermaid = run_cli("lineage", r2, "--project", project, "--format", "mermaid").out
    assert mermaid.startswith("flowchart LR\n")
    assert '-->|"numbers"|' in mermaid
    dot = run_cli("lineage", r2, "--project", project, "--format", "dot").out
    assert dot.startswith("digraph lineage {")
    assert '[label="numbers"]' in dot
    text = run_cli("lineage", r2, "--project", project).out
    assert f"b  run {r2}  [succeeded]" in text


def test_lineage_of_an_artifact_across_runs(two_runs, run_cli):
    project, (r1, r2) = two_runs
    show = run_cli("show", r1, "--project", project, "--json").json()
    numbers = next(s for s in show["steps"] if s["step"] == "a")["outputs"]["numbers"]["digest"]
    doc = run_cli("lineage", numbers[7:19], "--project", project, "--json").json()
    assert doc["root_kind"] == "artifact"
    assert doc["root"] == numbers
    ran = {(n["run_id"], n["step"]) for n in doc["nodes"] if n["kind"] == "step_run"}
    # Computed once by r1's a; read by b and c of r1 and by b of r2 (which re-ran).
    assert {(r1, "a"), (r1, "b"), (r1, "c"), (r2, "b")} <= ran
    assert (r2, "a") not in ran  # a cache hit is a reuse, not a producer
    root = next(n for n in doc["nodes"] if n["digest"] == numbers)
    assert root["detail"]["reused_by"] == 1
    assert (doc["limit"], doc["truncated"]) == (50, False)
    unknown = run_cli("lineage", "nonsense-id", "--project", project)
    assert unknown.code == 1
    assert "neither a run id nor an artifact digest" in unknown.err


def test_lineage_of_an_artifact_with_a_limit(two_runs, run_cli):
    project, (r1, _) = two_runs
    show = run_cli("show", r1, "--project", project, "--json").json()
    numbers = next(s for s in show["steps"] if s["step"] == "a")["outputs"]["numbers"]["digest"]
    root_id = f"artifact:{numbers}"

    def readers(doc):
        return [e["target"] for e in doc["edges"] if e["source"] == root_id]

    everything = run_cli("lineage", numbers, "--project", project, "--limit", "0", "--json")
    assert everything.code == 0, everything.err
    doc = everything.json()
    assert (doc["limit"], doc["truncated"]) == (None, False)
    assert len(readers(doc)) == 3  # b and c of r1, b of r2 (r2's c was a cache hit)

    one = run_cli("lineage", numbers, "--project", project, "--limit", "1", "--json").json()
    assert (one["limit"], one["truncated"]) == (1, True)
    assert len(readers(one)) == 1
    root = next(n for n in one["nodes"] if n["id"] == root_id)
    assert root["detail"]["more_readers"] == 2
    assert root["detail"]["reused_by"] == 1

    text = run_cli("lineage", numbers, "--project", project, "--limit", "1").out
    assert f"{numbers[7:19]} was also read by ... and 2 more step runs" in text
    assert "--limit 0 all)" in text
    mermaid = run_cli("lineage", numbers, "--project", project, "--limit", "1", "--format",
                      "mermaid").out  # fmt: skip
    assert '_readers["... and 2 more step runs"]' in mermaid
    assert "-.->" in mermaid
    dot = run_cli("lineage", numbers, "--project", project, "--limit", "1", "--format", "dot").out
    assert 'label="... and 2 more step runs", shape=note, style=dashed' in dot
    assert f'"{root_id}" -> "{root_id}#more_readers" [style=dashed];' in dot

    default = run_cli("lineage", numbers, "--project", project, "--json").json()
    assert (default["limit"], default["truncated"]) == (50, False)
    bad = run_cli("lineage", numbers, "--project", project, "--limit", "-1")
    assert bad.code == 2
    assert "expected a whole number >= 0, got '-1'" in bad.err


def test_artifacts_get_writes_the_stored_bytes(two_runs, run_cli, tmp_path):
    project, (r1, _) = two_runs
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(
        "artifacts", "get", r1, "a", "numbers", "-o", out, "--project", project, "--json"
    )
    assert result.code == 0, result.err
    doc = result.json()
    written = out / "numbers.json"
    assert doc["path"] == str(written)
    assert doc["serializer"] == "json"
    assert len(json.loads(written.read_text())) == 200
    again = run_cli("artifacts", "get", r1, "a", "numbers", "-o", written, "--project", project)
    assert again.code == 1
    assert "--force" in again.err
    bad = run_cli("artifacts", "get", r1, "a", "nope", "-o", out, "--project", project)
    assert bad.code == 1
    assert "no output or input 'nope'" in bad.err


def test_runs_filters(two_runs, run_cli):
    project, (r1, r2) = two_runs
    by_param = run_cli("runs", "--project", project, "--param", "SCALE=5", "--json").json()
    assert [r["run_id"] for r in by_param["runs"]] == [r2]
    both = run_cli("runs", "--project", project, "--metric", "rms>0", "--json").json()
    assert {r["run_id"] for r in both["runs"]} == {r1, r2}
    none = run_cli("runs", "--project", project, "--metric", "rms<0", "--json").json()
    assert none["runs"] == []
    bad = run_cli("runs", "--project", project, "--metric", "rms")
    assert bad.code == 2
    assert "NAME<OP>NUMBER" in bad.err


@pytest.mark.parametrize(
    "command",
    [["compare"], ["logs"], ["lineage"], ["artifacts", "get"], ["snapshot", "restore"],
     ["reproduce"]],
    ids=["compare", "logs", "lineage", "artifacts-get", "snapshot-restore", "reproduce"],
)  # fmt: skip
def test_help_has_examples(run_cli, command):
    result = run_cli(*command, "--help")
    assert result.code == 0
    assert "examples:" in result.out
    assert "--json" in result.out
