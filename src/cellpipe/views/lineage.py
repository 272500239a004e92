"""The lineage graph as text, Mermaid, Graphviz dot, JSON and a drawn graph.

Owns: the renderers of a `LineageGraph` (``cellpipe lineage`` and `cellpipe.lineage`): the
indented text, the Mermaid flowchart, the dot digraph, and the nodes and edges the SVG drawing
(`cellpipe.views.graph.graph_svg`) takes.

Invariants: pure functions of the graph; output is deterministic.

Must not depend on: api, cli, ui.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cellpipe.views.format import plural

if TYPE_CHECKING:
    from cellpipe.storage.lineage import LineageGraph, LineageNode


def _short(digest: str | None) -> str:
    return (digest or "")[7:19]


def _nodes(graph: LineageGraph) -> dict[str, LineageNode]:
    return {n.id: n for n in graph.nodes}


def _more(node: LineageNode) -> list[tuple[str, int]]:
    """The step runs the limit left out next to ``node``: ``(side, count)``."""
    return [
        (side, node.detail[key])
        for side, key in (("producers", "more_producers"), ("readers", "more_readers"))
        if node.detail.get(key)
    ]


def _more_text(count: int) -> str:
    return f"... and {count} more step run{'s' if count != 1 else ''}"


def _text_of(node: LineageNode) -> str:
    if node.kind == "artifact":
        kind = node.detail.get("type") or node.detail.get("serializer") or "artifact"
        return f"{_short(node.digest)} ({kind})"
    if node.kind == "data_source":
        return f"{node.label} [{node.detail.get('version', '')}]"
    return f"{node.step} in {node.run_id} [{node.status}]"


def to_text(graph: LineageGraph) -> str:
    """Return the graph as indented text: each step run with what it read and produced."""
    nodes = _nodes(graph)
    lines = [f"lineage of {graph.root_kind} {graph.root}"]
    incoming: dict[str, list[tuple[str, str, str]]] = {}
    outgoing: dict[str, list[tuple[str, str]]] = {}
    for edge in graph.edges:
        incoming.setdefault(edge.target, []).append((edge.label, edge.source, edge.producer or ""))
        outgoing.setdefault(edge.source, []).append((edge.label, edge.target))
    # Equal values share an artifact: an input names its producer on its edge; otherwise
    # (records before schema v5) every step run that produced the artifact is named.
    producers: dict[str, list[str]] = {}
    for e in graph.edges:
        if e.source.startswith("step:"):
            producers.setdefault(e.target, []).append(e.source)
    data_of = {e.target: e.source for e in graph.edges if e.source.startswith("data:")}
    # (artifact, producer step run) pairs some step run of the graph read: in a run's graph,
    # an output without one is a value stored only to load later (issue 11).
    read: set[tuple[str, str]] = set()
    for e in graph.edges:
        if e.target.startswith("step:"):
            for producer in [e.producer] if e.producer else producers.get(e.source, []):
                read.add((e.source, producer))
    for node in graph.nodes:
        if node.kind != "step_run":
            continue
        extra = (
            f" (reused from {node.detail['source_run']})" if node.detail.get("source_run") else ""
        )
        lines.append("")
        lines.append(f"{node.step}  run {node.run_id}  [{node.status}]{extra}")
        for label, source, producer in sorted(incoming.get(node.id, [])):
            origin = ""
            if producer in nodes:
                origin = f"  from {_text_of(nodes[producer])}"
            elif producer:  # a step run the graph does not show
                run_id, _, step = producer.removeprefix("step:").rpartition("/")
                origin = f"  from {step} in {run_id}"
            elif source in producers:
                origin = "  from " + " or ".join(_text_of(nodes[p]) for p in producers[source])
            elif source in data_of:
                origin = f"  from {_text_of(nodes[data_of[source]])}"
            lines.append(f"  in   {label} = {_text_of(nodes[source])}{origin}")
        for label, target in sorted(outgoing.get(node.id, [])):
            unread = ""
            if graph.root_kind == "run" and (target, node.id) not in read:
                unread = "  (not read downstream)"
            lines.append(f"  out  {label} = {_text_of(nodes[target])}{unread}")
    reused = [n for n in graph.nodes if n.detail.get("reused_by")]
    if reused:
        lines.append("")
        for node in reused:
            lines.append(
                f"{_short(node.digest)} was reused by "
                f"{plural(node.detail['reused_by'], 'cached run')}"
            )
    more = [(node, side, count) for node in graph.nodes for side, count in _more(node)]
    if more:
        lines.append("")
        for node, side, count in more:
            verb = "computed" if side == "producers" else "read"
            lines.append(f"{_short(node.digest)} was also {verb} by {_more_text(count)}")
        lines.append(
            f"(--limit {graph.limit}: the newest step runs on each side of an artifact are "
            "shown, the others counted; --limit N shows more, --limit 0 all)"
        )
    return "\n".join(lines) + "\n"


def _mermaid_label(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(graph: LineageGraph) -> str:
    """Return the graph as a Mermaid flowchart (steps boxes, artifacts rounded, data DBs).

    Step runs the limit left out are one dashed note per artifact and side.
    """
    ids = {n.id: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    for node in graph.nodes:
        label = _mermaid_label(_text_of(node))
        if node.kind == "step_run":
            lines.append(f'  {ids[node.id]}["{label}"]')
        elif node.kind == "artifact":
            lines.append(f'  {ids[node.id]}(["{label}"])')
        else:
            lines.append(f'  {ids[node.id]}[("{label}")]')
    for edge in graph.edges:
        lines.append(f'  {ids[edge.source]} -->|"{_mermaid_label(edge.label)}"| {ids[edge.target]}')
    for node in graph.nodes:
        for side, count in _more(node):
            note = f"{ids[node.id]}_{side}"
            lines.append(f'  {note}["{_more_text(count)}"]')
            if side == "producers":
                lines.append(f"  {note} -.-> {ids[node.id]}")
            else:
                lines.append(f"  {ids[node.id]} -.-> {note}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: LineageGraph) -> str:
    """Return the graph in Graphviz dot (left-out step runs as dashed notes)."""
    shapes = {"step_run": "box", "artifact": "ellipse", "data_source": "cylinder"}
    lines = ["digraph lineage {", "  rankdir=LR;"]
    for node in graph.nodes:
        label = _dot_quote(_text_of(node))
        lines.append(f"  {_dot_quote(node.id)} [label={label}, shape={shapes[node.kind]}];")
    for edge in graph.edges:
        lines.append(
            f"  {_dot_quote(edge.source)} -> {_dot_quote(edge.target)}"
            f" [label={_dot_quote(edge.label)}];"
        )
    for node in graph.nodes:
        for side, count in _more(node):
            note = _dot_quote(f"{node.id}#more_{side}")
            lines.append(
                f"  {note} [label={_dot_quote(_more_text(count))}, shape=note, style=dashed];"
            )
            source, target = (note, _dot_quote(node.id))
            if side == "readers":
                source, target = target, source
            lines.append(f"  {source} -> {target} [style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph_parts(graph: LineageGraph) -> tuple[list[Any], list[tuple[str, str, str]]]:
    """Return the graph's nodes (`GraphNode`) and edges for `graph_svg`."""
    from cellpipe.views.graph import GraphNode

    kinds = {"step_run": "step", "artifact": "artifact", "data_source": "source"}
    nodes = []
    for node in graph.nodes:
        if node.kind == "step_run":
            label, detail, state = node.step or node.label, f"run {node.run_id}", node.status
        else:
            label, detail, state = _text_of(node), "", None
        nodes.append(
            GraphNode(
                id=node.id,
                label=label,
                kind=kinds.get(node.kind, "artifact"),
                state=state,
                detail=detail,
            )
        )
    edges = [(e.source, e.target, e.label) for e in graph.edges]
    return nodes, edges


def to_svg(graph: LineageGraph) -> str:
    """Return the graph drawn as one self-contained ``<svg>``."""
    from cellpipe.views.graph import graph_svg

    nodes, edges = graph_parts(graph)
    return graph_svg(nodes, edges)
