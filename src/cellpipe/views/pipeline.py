"""A pipeline's graph: Mermaid, Graphviz dot, the graph JSON, the drawn SVG and its HTML.

Owns: the three text forms of ``cellpipe graph`` and the notebook view of a `Pipeline`
(``_repr_html_``: the steps drawn with `cellpipe.views.graph.graph_svg` and a table of the
steps, parameters and metrics).

Invariants: output is deterministic (steps in run order, edges sorted) and each edge is
labelled with the variables that flow along it; an edge with no variables is an ordering edge
from a ``prev:`` tag and is drawn dashed. Node identifiers are always valid in the target
language, whatever the step is called. HTML escapes every value.

Must not depend on: api, cli, ui, the runner or storage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cellpipe.views.format import cell_ranges, dumps, plural, short_value

if TYPE_CHECKING:
    from cellpipe.pipeline import Edge, JsonValue, Pipeline

# Words Mermaid's flowchart grammar reserves; a step with such a name gets a prefixed id.
_MERMAID_RESERVED = frozenset(
    {"end", "graph", "flowchart", "subgraph", "style", "class", "classdef", "click", "linkstyle"}
)


def to_mermaid(pipeline: Pipeline) -> str:
    """Return the pipeline as a Mermaid flowchart (top to bottom).

    Args:
        pipeline: the pipeline to draw.

    Returns:
        The diagram text, ending with a newline.
    """
    ids = {step.name: _mermaid_id(step.name) for step in pipeline.steps}
    lines = ["flowchart TD"]
    lines.extend(f'    {ids[step.name]}["{step.name}"]' for step in pipeline.steps)
    for edge in pipeline.edges:
        source, target = ids[edge.source], ids[edge.target]
        if edge.variables or edge.files:
            label = _mermaid_text(_label(edge))
            lines.append(f'    {source} -->|"{label}"| {target}')
        else:
            lines.append(f"    {source} -.-> {target}")
    return "\n".join(lines) + "\n"


def _label(edge: Edge) -> str:
    # Variables as they are; files written by one step and read by the other, marked.
    return ", ".join([*edge.variables, *(f"file {path}" for path in edge.files)])


def _mermaid_id(name: str) -> str:
    return f"step_{name}" if name.lower() in _MERMAID_RESERVED else name


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def to_dot(pipeline: Pipeline) -> str:
    """Return the pipeline as a Graphviz DOT digraph.

    Args:
        pipeline: the pipeline to draw.

    Returns:
        The graph text, ending with a newline.
    """
    lines = [
        f"digraph {_dot_quote(pipeline.name)} {{",
        "    rankdir=TB;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    lines.extend(f"    {_dot_quote(step.name)};" for step in pipeline.steps)
    for edge in pipeline.edges:
        head = f"    {_dot_quote(edge.source)} -> {_dot_quote(edge.target)}"
        if edge.variables or edge.files:
            lines.append(f"{head} [label={_dot_quote(_label(edge))}];")
        else:
            lines.append(f"{head} [style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_graph_json(pipeline: Pipeline) -> dict[str, JsonValue]:
    """Return the pipeline's graph as a JSON-ready dict.

    Args:
        pipeline: the pipeline to describe.

    Returns:
        ``{"name", "nodes": [{"id", "cells", "inputs", "outputs"}], "edges": [{"from", "to",
        "variables"}]}``, nodes in run order.
    """
    nodes: list[JsonValue] = [
        {
            "id": step.name,
            "cells": list(step.cells),
            "inputs": [{"name": ref.name, "from": ref.producer} for ref in step.inputs],
            "outputs": list(step.outputs),
        }
        for step in pipeline.steps
    ]
    edges: list[JsonValue] = [edge.to_json() for edge in pipeline.edges]
    return {"name": pipeline.name, "nodes": nodes, "edges": edges}


def to_json_text(pipeline: Pipeline) -> str:
    """Return `to_graph_json` as indented JSON text ending with a newline."""
    return dumps(to_graph_json(pipeline), indent=2, ensure_ascii=False) + "\n"


def graph_parts(pipeline: Pipeline) -> tuple[list[Any], list[tuple[str, str, str]]]:
    """Return the pipeline's steps as `GraphNode` and its edges, for `graph_svg`."""
    from cellpipe.views.graph import GraphNode

    nodes = [
        GraphNode(id=step.name, label=step.name, detail=f"cells {cell_ranges(step.cells)}")
        for step in pipeline.steps
    ]
    edges = [(edge.source, edge.target, _label(edge)) for edge in pipeline.edges]
    return nodes, edges


def pipeline_html(pipeline: Pipeline) -> str:
    """Return a pipeline as HTML: its graph drawn, then its steps, parameters and metrics."""
    from cellpipe.views.graph import graph_svg
    from cellpipe.views.html import section, table

    nodes, edges = graph_parts(pipeline)
    steps = [
        [
            step.name,
            cell_ranges(step.cells),
            ", ".join(f"{ref.name} ({ref.producer})" for ref in step.inputs) or "-",
            ", ".join(step.outputs) or "-",
        ]
        for step in pipeline.steps
    ]
    parameters = [[p.name, p.type, short_value(p.default)] for p in pipeline.parameters]
    metrics = [[m.name, m.producer or "-"] for m in pipeline.metrics]
    return section(
        f"pipeline {pipeline.name}",
        graph_svg(nodes, edges),
        table(["step", "cells", "reads", "hands on"], steps, title="Steps"),
        table(["name", "type", "default"], parameters, title="Parameters"),
        table(["name", "step"], metrics, title="Metrics"),
    )


def pipeline_text(pipeline: Pipeline) -> str:
    """Return a short text form of a pipeline: its name and steps in run order."""
    names = " -> ".join(step.name for step in pipeline.steps)
    return f"<cellpipe.Pipeline {pipeline.name}: {plural(len(pipeline.steps), 'step')}: {names}>"
