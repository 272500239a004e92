"""The compare, lineage and models pages in process: escaping, chart data, errors, links."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # Starlette would rather use httpx2, which is not installed
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from cellpipe.ui.app import create_app
from cellpipe.ui.pages._pagekit import json_script, linked_svg
from cellpipe.ui.pages.compare import chart_data
from ui_fake_project import FakeRun, make_project

TOKEN = "t0ken"
EVIL = "</script><script>alert(1)</script>"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(
        tmp_path,
        [
            FakeRun("a-1", parameters={"MAX_DEPTH": 4, "NOTE": EVIL}, metrics={"acc": 0.95}),
            FakeRun(
                "a-2",
                parameters={"MAX_DEPTH": 6, "NOTE": EVIL},
                metrics={"acc": 0.80, EVIL: 1.0, "label": "text"},
                minutes=1,
            ),
        ],
    )


@pytest.fixture
def http(project: Path) -> Iterator[TestClient]:
    with TestClient(create_app(project, token=TOKEN)) as made:
        made.get(f"/?token={TOKEN}")
        yield made


def chart_json(html: str) -> dict[str, object]:
    found = re.search(r'<script type="application/json" id="cp-chart-data">(.*?)</script>', html)
    assert found is not None
    return dict(json.loads(found.group(1)))


def test_compare_marks_differences_and_embeds_chart_data(http: TestClient) -> None:
    response = http.get("/compare?run=a-1&run=a-2")
    assert response.status_code == 200
    html = response.text
    differs = re.findall(r'<tr class="cp-differs"><th scope="row">([^<]+)', html)
    assert "MAX_DEPTH " in differs
    assert "NOTE " not in differs  # the same in both runs
    assert "acc " in differs
    data = chart_json(html)
    assert data["runs"] == ["a-1", "a-2"]
    metrics = {m["name"]: m["values"] for m in data["metrics"]}  # type: ignore[attr-defined]
    assert metrics["acc"] == [0.95, 0.8]
    assert metrics[EVIL] == [None, 1.0]  # missing in a-1
    assert "label" not in metrics  # not a number: tabled, not charted
    assert '<script src="/static/vendor/chart.umd.min.js"' in html
    assert '<script src="/static/compare.js"' in html


def test_compare_escapes_every_value(http: TestClient) -> None:
    html = http.get("/compare?run=a-1&run=a-2").text
    assert EVIL not in html
    assert "<script>alert(1)" not in html
    assert html.count("<script") == html.count("</script>")  # nothing closed early


def test_json_script_cannot_close_its_element() -> None:
    tag = json_script("x", {"a": "</script><!--", "b": "&"})
    inner = tag.split(">", 1)[1].rsplit("</script>", 1)[0]
    assert "<" not in inner
    assert json.loads(inner) == {"a": "</script><!--", "b": "&"}


def test_chart_data_skips_non_numbers_and_non_finite() -> None:
    document = {
        "runs": ["r1", "r2"],
        "metrics": [
            {"name": "acc", "values": [0.5, float("nan")], "differs": True},
            {"name": "flag", "values": [True, False], "differs": True},
        ],
    }
    data = chart_data(document, {})
    assert data == {
        "runs": ["r1", "r2"],
        "metrics": [{"name": "acc", "values": [0.5, None], "differs": True}],
    }


def test_compare_with_fewer_than_two_runs_offers_a_labelled_picker(http: TestClient) -> None:
    html = http.get("/compare?run=a-1").text
    assert "Pick at least two runs" in html
    for field in re.findall(r'<input type="checkbox"[^>]*id="([^"]+)"', html):
        assert f'<label for="{field}">' in html


def test_compare_of_an_unknown_run_is_404(http: TestClient) -> None:
    response = http.get("/compare?run=a-1&run=nope")
    assert response.status_code == 404
    assert "nope" in response.text


def test_lineage_of_a_run_links_steps_and_artifacts(http: TestClient) -> None:
    response = http.get("/lineage?run=a-2")
    assert response.status_code == 200
    html = response.text
    assert "<svg" in html
    assert '<a href="/runs/a-2/steps/train"><g class="cp-node"' in html
    assert re.search(r'<a href="/lineage\?artifact=sha256%3A[0-9a-f]+"><g class="cp-node"', html)
    assert re.search(r'href="/artifacts/sha256:[0-9a-f]+">download</a>', html)
    assert "lineage of run a-2" in unescape(html)


def test_lineage_without_a_target_is_a_form_and_bad_numbers_are_400(http: TestClient) -> None:
    html = http.get("/lineage").text
    assert '<label for="cp-lineage-run">' in html
    assert '<label for="cp-lineage-artifact">' in html
    assert http.get("/lineage?run=a-1&limit=x").status_code == 400
    assert http.get("/lineage?run=no-such-run").status_code == 404


def test_linked_svg_links_only_known_nodes_and_escapes_hrefs() -> None:
    from starlette.requests import Request

    request = Request({"type": "http", "root_path": "", "headers": [], "path": "/"})
    svg = (
        '<svg><g class="cp-node" data-id="step:r/a&amp;b" data-kind="step"><rect/></g>'
        '<g class="cp-node" data-id="data:x"><rect/></g></svg>'
    )
    out = linked_svg(request, svg, {"step:r/a&b": '/runs/r/steps/a"&b'})
    assert (
        '<a href="/runs/r/steps/a&quot;&amp;b"><g class="cp-node" data-id="step:r/a&amp;b"' in out
    )
    assert '<g class="cp-node" data-id="data:x"><rect/></g>' in out
    assert out.count("<a ") == 1


def test_models_pages_without_models(http: TestClient) -> None:
    html = http.get("/models").text
    assert "No model is registered yet" in html
    assert http.get("/models/wine").status_code == 404
    assert http.get("/models/wine/1").status_code == 404
    assert http.get("/models/wine/production").status_code == 404


def test_item13_models_pages_show_archived_versions_and_tags(
    http: TestClient, project: Path
) -> None:
    import cellpipe

    for n in (1, 2):
        cellpipe.register_model({"n": n}, "wine", tags={"team": EVIL}, project=project)
    cellpipe.api.archive_model_version("wine:2", project=project)
    listing = http.get("/models").text
    assert "1 (+1 archived)" in listing
    model = http.get("/models/wine")  # every version archived but one: the page still opens
    assert model.status_code == 200
    assert re.search(r"<td[^>]*>archived</td>", model.text)
    assert EVIL not in model.text  # tag values are escaped
    version = http.get("/models/wine/2").text
    assert "NAME and NAME@latest skip it" in version
    cellpipe.api.archive_model_version("wine:1", project=project)
    every = http.get("/models")
    assert every.status_code == 200  # no version left to resolve: latest is "-"
    assert "0 (+2 archived)" in every.text
    assert http.get("/models/wine").status_code == 200
    assert http.get("/models/wine/\u00b2").status_code in (400, 404)
