"""`cellpipe graph`: mermaid, dot and json renderings, in process and on the examples."""

from __future__ import annotations

import json

import pytest

from cellpipe.cli.graph import to_dot, to_graph_json, to_mermaid
from cellpipe.pipeline import CodeChunk, InputRef, Pipeline, Step

DIAMOND_MERMAID = """\
flowchart TD
    a["a"]
    b["b"]
    c["c"]
    d["d"]
    a -->|"numbers"| b
    a -->|"numbers"| c
    b -->|"mean, spread"| d
    c -->|"rms"| d
"""

DIAMOND_DOT = """\
digraph "diamond" {
    rankdir=TB;
    node [shape=box, style=rounded, fontname="Helvetica"];
    edge [fontname="Helvetica", fontsize=10];
    "a";
    "b";
    "c";
    "d";
    "a" -> "b" [label="numbers"];
    "a" -> "c" [label="numbers"];
    "b" -> "d" [label="mean, spread"];
    "c" -> "d" [label="rms"];
}
"""


def make_step(name: str, cell: int, **fields) -> Step:
    code = (CodeChunk(cell=cell, source="pass", python="pass"),)
    return Step(name=name, cells=(cell,), code=code, **fields)


@pytest.fixture
def ordering_pipeline() -> Pipeline:
    """`start` -> `end` passes `x`; `report` runs after `end` only because of a prev: tag."""
    return Pipeline.build(
        name='odd "name"',
        path="odd.ipynb",
        steps=[
            make_step("start", 1, outputs=("x",)),
            make_step(
                "end", 2, upstream=("start",), inputs=(InputRef(name="x", producer="start"),)
            ),
            make_step("report", 3, upstream=("end",)),
        ],
    )


def test_mermaid_labels_data_edges_and_dashes_ordering_edges(ordering_pipeline):
    assert to_mermaid(ordering_pipeline) == (
        "flowchart TD\n"
        '    start["start"]\n'
        '    step_end["end"]\n'
        '    report["report"]\n'
        "    step_end -.-> report\n"
        '    start -->|"x"| step_end\n'
    )


def test_dot_quotes_names_and_dashes_ordering_edges(ordering_pipeline):
    text = to_dot(ordering_pipeline)

    assert text.startswith('digraph "odd \\"name\\"" {\n')
    assert '    "start" -> "end" [label="x"];\n' in text
    assert '    "end" -> "report" [style=dashed];\n' in text
    assert text.endswith("}\n")


def test_graph_json_has_nodes_in_run_order_and_edges(ordering_pipeline):
    doc = to_graph_json(ordering_pipeline)

    assert [n["id"] for n in doc["nodes"]] == ["start", "end", "report"]
    assert doc["nodes"][1]["inputs"] == [{"name": "x", "from": "start"}]
    assert doc["edges"] == [
        {"from": "end", "to": "report", "variables": []},
        {"from": "start", "to": "end", "variables": ["x"]},
    ]


@pytest.mark.e2e
def test_graph_mermaid_of_the_diamond(run_cli, examples):
    result = run_cli("graph", examples / "diamond" / "diamond.ipynb")

    assert result.code == 0, result.err
    assert result.out == DIAMOND_MERMAID


@pytest.mark.e2e
def test_graph_dot_of_the_diamond(run_cli, examples):
    result = run_cli("graph", examples / "diamond" / "diamond.ipynb", "--format", "dot")

    assert result.code == 0, result.err
    assert result.out == DIAMOND_DOT


@pytest.mark.e2e
def test_graph_json_of_the_wine_fan_out(run_cli, examples):
    result = run_cli("graph", examples / "wine" / "wine.ipynb", "--format", "json")

    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["name"] == "wine"
    assert [n["id"] for n in doc["nodes"]][:2] == ["load_data", "split"]
    targets_of_split = {e["to"] for e in doc["edges"] if e["from"] == "split"}
    assert {"train_forest", "train_logreg"} <= targets_of_split


@pytest.mark.e2e
def test_graph_of_a_broken_notebook_prints_the_errors_and_exits_2(run_cli, examples):
    result = run_cli("graph", examples / "mistakes" / "mistakes.ipynb", "--format", "dot")

    assert result.code == 2
    assert result.out == ""
    assert "pipeline-metric" in result.err


@pytest.mark.e2e
def test_graph_rejects_an_unknown_format(run_cli, examples):
    result = run_cli("graph", examples / "diamond" / "diamond.ipynb", "--format", "png")

    assert result.code == 2
    assert "invalid choice: 'png'" in result.err
