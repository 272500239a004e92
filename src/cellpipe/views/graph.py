"""A graph (pipeline steps, lineage) as one self-contained SVG, laid out by grandalf.

Owns: `GraphNode` and `graph_svg`, the drawing the notebook views, ``cellpipe report`` and the
live view share. The layout is grandalf's Sugiyama (layered) layout, top to bottom: sources on
top, edges pointing down, crossings reduced; each connected component is laid out on its own and
the components are placed side by side.

Invariants: the SVG needs nothing else: inline styles, no scripts, no fonts or images fetched,
every label escaped (it may be user text: step, variable and file names). Marker ids carry a
per-drawing suffix, so several drawings on one page do not share arrowheads. grandalf is
imported when a graph is drawn, not when this module is.

Must not depend on: api, cli, ui.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from typing import Any

#: fill, stroke and text colour by step state; `graph_svg` falls back to the node's kind.
STATE_COLOURS: dict[str, tuple[str, str, str]] = {
    "waiting": ("#f3f4f6", "#9ca3af", "#374151"),
    "pending": ("#f3f4f6", "#9ca3af", "#374151"),
    "running": ("#dbeafe", "#2563eb", "#1e3a8a"),
    "cached": ("#ecfdf5", "#10b981", "#065f46"),
    "rerun": ("#fef3c7", "#d97706", "#78350f"),
    "succeeded": ("#dcfce7", "#16a34a", "#14532d"),
    "done": ("#dcfce7", "#16a34a", "#14532d"),
    "failed": ("#fee2e2", "#dc2626", "#7f1d1d"),
    "skipped": ("#f9fafb", "#d1d5db", "#6b7280"),
    "cancelled": ("#fef9c3", "#a16207", "#713f12"),
}
KIND_COLOURS: dict[str, tuple[str, str, str]] = {
    "step": ("#eef2ff", "#6366f1", "#1e1b4b"),
    "source": ("#fff7ed", "#ea580c", "#7c2d12"),
    "artifact": ("#f0f9ff", "#0284c7", "#0c4a6e"),
    "model": ("#fdf4ff", "#c026d3", "#701a75"),
    "more": ("#ffffff", "#d1d5db", "#6b7280"),
}

_FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"
_CHAR_W = 7.0  # px per character at 12px, a generous average
_LABEL_MAX = 40  # characters of a node label or detail before it is shortened
_EDGE_LABEL_MAX = 18
_PAD_X = 12.0
_ROW_H = 28.0
_DETAIL_H = 14.0
_GAP_X = 28.0  # between nodes of a layer and between components
_GAP_Y = 36.0  # between layers
_DETAIL_W = 190.0  # the width of a box with a second line
_MARGIN = 10.0


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One box of a drawing.

    Attributes:
        id: unique within the drawing; edges name it.
        label: the first line (a step, artifact, source or model name).
        kind: ``step``, ``source``, ``artifact``, ``model`` or ``more``; the colour when no state.
        state: a step's state (`STATE_COLOURS`); wins over ``kind`` for the colour.
        detail: a second, smaller line (a state and its reason, a size, a duration).
    """

    id: str
    label: str
    kind: str = "step"
    state: str | None = None
    detail: str = ""


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(label: str, has_detail: bool) -> tuple[float, float]:
    # The size depends on the label only, not on the detail text (a live view's elapsed time
    # changes it every second): the layout stays put while states change, and is cached.
    chars = len(_shorten(label, _LABEL_MAX))
    width = max(_DETAIL_W if has_detail else 60.0, chars * _CHAR_W + 2 * _PAD_X)
    return width, _ROW_H + (_DETAIL_H if has_detail else 0.0)


def _detail_text(detail: str, width: float) -> str:
    return _shorten(detail, max(8, int((width - 2 * _PAD_X) / (_CHAR_W * 0.85))))


class _View:
    """What grandalf asks of a vertex's or an edge's view: its size, then its place."""

    def __init__(self, w: float = 0.0, h: float = 0.0) -> None:
        self.w = w
        self.h = h
        self.xy: tuple[float, float] = (0.0, 0.0)
        self.points: list[tuple[float, float]] = []

    def setpath(self, points: list[tuple[float, float]]) -> None:
        self.points = [(float(x), float(y)) for x, y in points]


_NodeKey = tuple[str, str, bool]  # id, label, has a detail line
_EdgeKey = tuple[str, str, str]


@lru_cache(maxsize=64)
def _layout(
    nodes: tuple[_NodeKey, ...], edges: tuple[_EdgeKey, ...]
) -> tuple[dict[str, _View], list[tuple[str, str, str, list[tuple[float, float]]]]]:
    """Place every node (centre) and route every edge; coordinates start at (0, 0)."""
    from grandalf.graphs import Edge, Graph, Vertex
    from grandalf.layouts import SugiyamaLayout

    views: dict[str, _View] = {}
    vertices: dict[str, Any] = {}
    for node_id, label, has_detail in nodes:
        vertex = Vertex(node_id)
        vertex.view = views[node_id] = _View(*_size(label, has_detail))
        vertices[node_id] = vertex
    graph_edges: list[tuple[Any, str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for source, target, label in edges:
        if source == target or (source, target) in seen:
            continue
        if source not in vertices or target not in vertices:
            raise ValueError(f"edge {source!r} -> {target!r} names a node the graph lacks")
        seen.add((source, target))
        edge = Edge(vertices[source], vertices[target])
        edge.view = _View()
        graph_edges.append((edge, source, target, label))
    graph = Graph(list(vertices.values()), [e for e, *_ in graph_edges])
    offset = 0.0
    for component in graph.C:
        members = list(component.sV)
        if len(members) == 1:
            vertex = members[0]
            vertex.view.xy = (vertex.view.w / 2, vertex.view.h / 2)
        else:
            sugiyama = SugiyamaLayout(component)
            sugiyama.xspace = _GAP_X
            sugiyama.yspace = _GAP_Y
            roots = [v for v in members if not v.e_in()]
            sugiyama.init_all(roots=roots or None)
            sugiyama.draw()
        # Dummy points of long edges may lie outside the boxes: they count in the extent.
        bends = [p for e in component.sE for p in e.view.points]
        left = min([v.view.xy[0] - v.view.w / 2 for v in members] + [x for x, _ in bends])
        top = min(v.view.xy[1] - v.view.h / 2 for v in members)
        dx, dy = offset - left, -top
        for vertex in members:
            x, y = vertex.view.xy
            vertex.view.xy = (x + dx, y + dy)
        for edge in component.sE:
            edge.view.points = [(x + dx, y + dy) for x, y in edge.view.points]
        offset = (
            max(
                [v.view.xy[0] + v.view.w / 2 for v in members]
                + [x for e in component.sE for x, _ in e.view.points]
            )
            + _GAP_X
        )
    routed = []
    for edge, source, target, label in graph_edges:
        points = list(edge.view.points) or [views[source].xy, views[target].xy]
        start, end = views[source], views[target]
        downward = end.xy[1] >= start.xy[1]
        sign = 1.0 if downward else -1.0
        points[0] = (points[0][0], start.xy[1] + sign * start.h / 2)
        points[-1] = (points[-1][0], end.xy[1] - sign * end.h / 2)
        routed.append((source, target, label, points))
    return views, routed


def graph_svg(
    nodes: Sequence[GraphNode], edges: Sequence[tuple[str, str, str]], *, title: str = ""
) -> str:
    """Draw a directed graph as one self-contained ``<svg>`` element.

    Args:
        nodes: the boxes; their ids must be unique.
        edges: ``(source id, target id, label)``; a label may be empty. Self-loops and repeated
            edges are drawn once (or not at all, for a loop).
        title: the drawing's accessible name (``<title>``).

    Returns:
        SVG markup (no XML declaration), ready to embed in HTML.

    Raises:
        ValueError: when an edge names a node that is not in ``nodes`` (a caller's bug).
    """
    if not nodes:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="24" role="img">'
            f'<text x="4" y="16" style="{_FONT};font-size:12px;fill:#6b7280">(no steps)</text>'
            "</svg>"
        )
    views, routed = _layout(
        tuple((n.id, n.label, bool(n.detail)) for n in nodes), tuple(tuple(e) for e in edges)
    )
    suffix = hashlib.sha256(
        repr(([(n.id, n.label, n.state, n.detail) for n in nodes], list(edges))).encode()
    ).hexdigest()[:10]
    arrow = f"cp-arrow-{suffix}"
    fan_in = Counter(target for _, target, _, _ in routed)
    fan_out = Counter(source for source, _, _, _ in routed)
    bends = [p for *_, points in routed for p in points]
    labels = [
        max(x for x, _ in points) + 8 + _CHAR_W * min(len(label), _EDGE_LABEL_MAX)
        for *_, label, points in routed
        if label
    ]
    width = max([v.xy[0] + v.w / 2 for v in views.values()] + [x + 4 for x, _ in bends] + labels)
    width += 2 * _MARGIN
    height = max(v.xy[1] + v.h / 2 for v in views.values()) + 2 * _MARGIN
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="{-_MARGIN:.0f} {-_MARGIN:.0f} {width:.0f} {height:.0f}" role="img" '
        f'style="max-width:100%;height:auto">',
        f"<title>{escape(title or 'pipeline graph')}</title>",
        f'<defs><marker id="{arrow}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#6b7280"/>'
        "</marker></defs>",
    ]
    for source, target, label, points in routed:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        out.append(
            f"<g><title>{escape(f'{source} → {target}' + (f': {label}' if label else ''))}</title>"
            f'<polyline points="{path}" fill="none" stroke="#9ca3af" stroke-width="1.3" '
            f'marker-end="url(#{arrow})"/>'
        )
        if label:
            # A long label (many variables) would run over its neighbours: its count is drawn,
            # the names are in the tooltip.
            shown = label if len(label) <= _EDGE_LABEL_MAX else f"{label.count(',') + 1} values"
            (x0, y0), (x1, y1) = points[len(points) // 2 - 1], points[len(points) // 2]
            # Where edges fan in, labels near the target would overlap: put them near the
            # source then, and near the target where edges fan out.
            t = 0.3 if fan_in[target] > fan_out[source] else 0.7
            out.append(
                f'<text x="{x0 + (x1 - x0) * t + 4:.1f}" y="{y0 + (y1 - y0) * t + 4:.1f}" '
                f'style="{_FONT};font-size:10px;fill:#6b7280">'
                f"{escape(shown)}</text>"
            )
        out.append("</g>")
    for node in nodes:
        view = views[node.id]
        fill, stroke, ink = STATE_COLOURS.get(node.state or "") or KIND_COLOURS.get(
            node.kind, KIND_COLOURS["step"]
        )
        x, y = view.xy[0] - view.w / 2, view.xy[1] - view.h / 2
        dash = ' stroke-dasharray="4 3"' if node.state in ("cached", "skipped") else ""
        tooltip = node.label + (f"\n{node.detail}" if node.detail else "")
        state = f' data-state="{escape(node.state)}"' if node.state else ""
        out.append(
            f'<g class="cp-node" data-id="{escape(node.id)}" data-kind="{escape(node.kind)}"'
            f"{state}><title>{escape(tooltip)}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{view.w:.1f}" height="{view.h:.1f}" rx="6" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dash}/>'
            f'<text x="{view.xy[0]:.1f}" y="{y + 18:.1f}" text-anchor="middle" '
            f'style="{_FONT};font-size:12px;font-weight:600;fill:{ink}">'
            f"{escape(_shorten(node.label, _LABEL_MAX))}</text>"
        )
        if node.detail:
            out.append(
                f'<text x="{view.xy[0]:.1f}" y="{y + 18 + _DETAIL_H:.1f}" text-anchor="middle" '
                f'style="{_FONT};font-size:10px;fill:{ink}">'
                f"{escape(_detail_text(node.detail, view.w))}</text>"
            )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)
