"""The lineage renderers (text, Mermaid, dot, SVG) and the lineage result object."""

from __future__ import annotations

from cellpipe.storage.lineage import LineageEdge, LineageGraph, LineageNode
from cellpipe.views.lineage import to_dot, to_mermaid, to_svg, to_text
from cellpipe.views.results import LineageView

DIGEST = "sha256:" + "ab" * 32


def _graph() -> LineageGraph:
    nodes = (
        LineageNode(id="step:r1/a", kind="step_run", label="a", run_id="r1", step="a",
                    status="succeeded"),
        LineageNode(id=f"artifact:{DIGEST}", kind="artifact", label="x", digest=DIGEST,
                    detail={"type": "builtins.int"}),
        LineageNode(id='step:r1/<b"', kind="step_run", label="b", run_id="r1", step='<b"',
                    status="cached", detail={"source_run": "r0"}),
    )  # fmt: skip
    edges = (
        LineageEdge(source="step:r1/a", target=f"artifact:{DIGEST}", label="x"),
        LineageEdge(source=f"artifact:{DIGEST}", target='step:r1/<b"', label="x",
                    producer="step:r1/a"),
    )  # fmt: skip
    return LineageGraph(root="r1", root_kind="run", nodes=nodes, edges=edges)


def test_text_mermaid_and_dot() -> None:
    graph = _graph()
    text = to_text(graph)
    assert text.startswith("lineage of run r1\n")
    assert "  out  x = abababababab (builtins.int)" in text
    assert "(reused from r0)" in text
    assert "  in   x = abababababab (builtins.int)  from a in r1 [succeeded]" in text
    mermaid = to_mermaid(graph)
    assert mermaid.startswith("flowchart LR\n")
    assert "#quot;" in mermaid  # the quote in the step name
    dot = to_dot(graph)
    assert dot.startswith("digraph lineage {")
    assert '\\"' in dot


def test_svg_and_the_result_object_escape_names() -> None:
    graph = _graph()
    svg = to_svg(graph)
    assert svg.startswith("<svg")
    assert '<b"' not in svg
    view = LineageView(graph)
    assert view.to_dict() == graph.to_json()
    assert repr(view) == to_text(graph).rstrip("\n")
    page = view._repr_html_()
    assert "<svg" in page
    assert "<b" + '"' not in page
