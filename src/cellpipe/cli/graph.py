"""``cellpipe graph``: the pipeline's steps and data edges as Mermaid, Graphviz DOT or JSON.

Owns: the ``graph`` command and the three text forms of a pipeline's graph.

Invariants: output is deterministic (steps in run order, edges sorted) and each edge is
labelled with the variables that flow along it; an edge with no variables is an ordering edge
from a ``prev:`` tag and is drawn dashed. Node identifiers are always valid in the target
language, whatever the step is called.

Must not depend on: the runner, storage or other command modules.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cellpipe.cli import render
from cellpipe.cli._loading import NOTEBOOK_HELP, load_notebook

if TYPE_CHECKING:
    from cellpipe.pipeline import Edge, JsonValue, Pipeline

FORMATS = ("mermaid", "dot", "json")

DESCRIPTION = """\
Print the pipeline's graph: one node per step, one edge per dependency, each edge labelled
with the variables that flow along it and the files one step writes and the other reads
(dashed when it only orders two steps, from a prev: tag).

  mermaid  a Mermaid flowchart: paste it into a Markdown file on GitHub or mermaid.live
  dot      Graphviz: render it with `dot -Tsvg`
  json     {"name", "nodes": [...], "edges": [{"from", "to", "variables"}]}

A notebook with definition errors prints them (as `cellpipe check` does) and exits with 2.
"""

EPILOG = """\
examples:
  cellpipe graph train.ipynb
  cellpipe graph train.ipynb --format dot | dot -Tsvg > pipeline.svg"""

# Words Mermaid's flowchart grammar reserves; a step with such a name gets a prefixed id.
_MERMAID_RESERVED = frozenset(
    {"end", "graph", "flowchart", "subgraph", "style", "class", "classdef", "click", "linkstyle"}
)


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add the ``graph`` command to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
        parents: parsers carrying the options every command accepts.
    """
    parser = subparsers.add_parser(
        "graph",
        parents=parents,
        help="print the pipeline's steps and data edges as mermaid, dot or json",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebook", metavar="NOTEBOOK", help=NOTEBOOK_HELP)
    parser.add_argument(
        "--format",
        "-f",
        choices=FORMATS,
        default="mermaid",
        help="output format (default: mermaid)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``cellpipe graph``.

    Args:
        args: the parsed arguments (``notebook``, ``format``).

    Returns:
        The exit status: 0.

    Raises:
        CellpipeError: any error reading or validating the notebook.
    """
    pipeline = load_notebook(args.notebook)
    renderers = {"mermaid": to_mermaid, "dot": to_dot, "json": to_json_text}
    sys.stdout.write(renderers[args.format](pipeline))
    return 0


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
    return render.dumps(to_graph_json(pipeline), indent=2, ensure_ascii=False) + "\n"
