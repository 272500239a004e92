import re
import xml.etree.ElementTree as ET

import pytest

from cellpipe.views.graph import GraphNode, _layout, graph_svg

SVG = "{http://www.w3.org/2000/svg}"

WINE = (
    [
        GraphNode("load", "load", state="succeeded", detail="done 0.2 s"),
        GraphNode("split", "split", state="cached", detail="cached"),
        GraphNode("train", "train", state="running"),
        GraphNode("evaluate", "evaluate", state="waiting"),
    ],
    [
        ("load", "split", "df"),
        ("split", "train", "x_train, y_train"),
        ("train", "evaluate", "model"),
        ("split", "evaluate", "x_test"),
    ],
)


def test_every_edge_points_down_to_a_later_layer():
    views, routed = _layout(*_keys(*WINE))
    for source, target, _, points in routed:
        assert views[source].xy[1] < views[target].xy[1]
        # starts at the bottom of the source box, ends at the top of the target box
        assert points[0][1] == pytest.approx(views[source].xy[1] + views[source].h / 2)
        assert points[-1][1] == pytest.approx(views[target].xy[1] - views[target].h / 2)


def test_boxes_never_overlap_across_components():
    nodes = [GraphNode(f"n{i}", f"node {i}") for i in range(6)]
    edges = [("n0", "n1", ""), ("n2", "n3", ""), ("n3", "n4", "")]  # three components
    views, _ = _layout(*_keys(nodes, edges))
    boxes = [
        (v.xy[0] - v.w / 2, v.xy[1] - v.h / 2, v.xy[0] + v.w / 2, v.xy[1] + v.h / 2)
        for v in views.values()
    ]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_the_svg_is_well_formed_and_names_every_node_with_its_state():
    svg = graph_svg(*WINE, title="wine")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    nodes = {
        g.get("data-id"): g.get("data-state") for g in root.iter(f"{SVG}g") if g.get("data-id")
    }
    assert nodes == {
        "load": "succeeded",
        "split": "cached",
        "train": "running",
        "evaluate": "waiting",
    }
    assert root.find(f"{SVG}title").text == "wine"
    assert len(root.findall(f".//{SVG}polyline")) == 4


def test_user_text_is_escaped_and_nothing_is_fetched():
    hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    svg = graph_svg(
        [GraphNode("a", hostile, detail=hostile), GraphNode("b", "b")], [("a", "b", hostile)]
    )
    ET.fromstring(svg)  # still one well-formed element
    assert "<script" not in svg
    assert "<img" not in svg
    assert not re.search(r"(href|src)=\"?https?:", svg)


def test_two_drawings_on_one_page_do_not_share_arrowheads():
    first = graph_svg(*WINE)
    second = graph_svg([GraphNode("x", "x"), GraphNode("y", "y")], [("x", "y", "")])
    ids = [re.search(r'marker id="([^"]+)"', s).group(1) for s in (first, second)]
    assert ids[0] != ids[1]


def test_an_edge_to_a_missing_node_is_a_bug_not_a_drawing():
    with pytest.raises(ValueError, match="lacks"):
        graph_svg([GraphNode("a", "a")], [("a", "ghost", "")])


def test_an_empty_graph_says_so():
    assert "(no steps)" in graph_svg([], [])


def test_loops_and_repeated_edges_are_drawn_once():
    svg = graph_svg(
        [GraphNode("a", "a"), GraphNode("b", "b")], [("a", "b", ""), ("a", "b", ""), ("a", "a", "")]
    )
    assert svg.count("<polyline") == 1


def test_long_edges_stay_inside_the_drawing():
    # wine's shape: evaluate reads from every layer, so its long edges bend around the others.
    nodes = [GraphNode(n, n) for n in ("load", "split", "forest", "logreg", "evaluate")]
    edges = [
        ("load", "split", "data"),
        ("split", "forest", "X_train, y_train"),
        ("split", "logreg", "X_train, y_train"),
        ("load", "evaluate", "class_names"),
        ("split", "evaluate", "X_test, y_test"),
        ("forest", "evaluate", "forest"),
        ("logreg", "evaluate", "logreg"),
    ]
    root = ET.fromstring(graph_svg(nodes, edges))
    x0, y0, width, height = (float(v) for v in root.get("viewBox").split())
    for line in root.iter(f"{SVG}polyline"):
        for point in line.get("points").split():
            x, y = (float(v) for v in point.split(","))
            assert x0 <= x <= x0 + width
            assert y0 <= y <= y0 + height


def test_a_long_edge_label_is_drawn_as_a_count_with_the_names_in_the_tooltip():
    names = "X_test, X_train, y_test, y_train"
    svg = graph_svg([GraphNode("a", "a"), GraphNode("b", "b")], [("a", "b", names)])
    assert ">4 values</text>" in svg
    assert f"a → b: {names}" in svg


def _keys(nodes, edges):
    return tuple((n.id, n.label, bool(n.detail)) for n in nodes), tuple(edges)


def test_the_layout_does_not_move_when_only_states_and_details_change():
    # A live view redraws every second with new elapsed times: the boxes must stay put.
    before = graph_svg(
        [GraphNode(n.id, n.label, state="running", detail="0.1 s") for n in WINE[0]], WINE[1]
    )
    nodes = [
        GraphNode(n.id, n.label, state="failed", detail="failed after 12345.6 s, a long reason")
        for n in WINE[0]
    ]
    after = graph_svg(nodes, WINE[1])
    boxes = re.compile(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)"')
    assert boxes.findall(before) == boxes.findall(after)
