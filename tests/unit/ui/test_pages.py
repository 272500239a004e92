"""The runs, run and step pages in process: filters, pagination, live markers, the graph."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # Starlette would rather use httpx2, which is not installed
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from cellpipe import api
from cellpipe.errors import CellpipeError
from cellpipe.ui.app import create_app
from cellpipe.ui.pages.runs import PAGE_SIZE, parse_filter
from ui_fake_project import FakeRun, make_project

TOKEN = "t0ken"


def rows(html: str) -> list[str]:
    return re.findall(r'<tr data-run-id="([^"]+)"', html)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(
        tmp_path,
        [
            FakeRun("a-1", parameters={"MAX_DEPTH": 4}, metrics={"acc": 0.95}, minutes=1),
            FakeRun("a-2", parameters={"MAX_DEPTH": 6}, metrics={"acc": 0.80}, minutes=2),
            FakeRun("a-3", status="failed", parameters={"MAX_DEPTH": 6}, minutes=3),
            FakeRun("a-4", status="running", minutes=4),
        ],
    )


@pytest.fixture
def http(project: Path) -> Iterator[TestClient]:
    with TestClient(create_app(project, token=TOKEN)) as made:
        made.get(f"/?token={TOKEN}")
        yield made


# -- the filter box ----------------------------------------------------------------------------


def test_parse_filter_reads_status_parameters_and_metrics() -> None:
    found = parse_filter("acc > 0.9, MAX_DEPTH=6 status:failed loss<=1e-3 f1 != 0")
    assert found.status == "failed"
    assert found.params == ["MAX_DEPTH=6"]
    assert found.metrics == ["acc>0.9", "loss<=1e-3", "f1!=0"]


def test_parse_filter_of_nothing_is_no_filter() -> None:
    assert parse_filter("  ") == parse_filter("")


def test_parse_filter_says_where_it_cannot_read() -> None:
    with pytest.raises(CellpipeError, match="at 'what is this'"):
        parse_filter("acc > 0.9 what is this")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["a-4", "a-3", "a-2", "a-1"]),
        ("acc > 0.9", ["a-1"]),
        ("acc<0.9", ["a-2"]),
        ("MAX_DEPTH=6", ["a-3", "a-2"]),
        ("status:failed", ["a-3"]),
        ("status:succeeded MAX_DEPTH=6", ["a-2"]),
        ("status:running", ["a-4"]),
    ],
)
def test_the_runs_page_filters_on_the_server(
    http: TestClient, query: str, expected: list[str]
) -> None:
    response = http.get("/", params={"q": query})
    assert response.status_code == 200
    assert rows(response.text) == expected


@pytest.mark.parametrize("query", ["status:nonsense", "acc > high", "???"])
def test_a_bad_filter_is_explained(http: TestClient, query: str) -> None:
    response = http.get("/", params={"q": query})
    assert response.status_code == 200
    assert 'role="alert"' in response.text
    assert rows(response.text) == []


def test_the_runs_table_has_parameters_and_metrics_as_columns(http: TestClient) -> None:
    text = http.get("/").text
    assert 'data-key="p:MAX_DEPTH"' in text
    assert 'data-key="m:acc"' in text
    assert 'data-sort="0.95"' in text
    assert '<input type="checkbox" name="run" value="a-1"' in text
    assert 'action="/compare"' in text
    assert '<label for="cp-q">' in text


def test_the_runs_page_is_paginated(tmp_path: Path) -> None:
    total = PAGE_SIZE * 2 + 7
    make_project(tmp_path, [FakeRun(f"r-{i:04d}", steps=(), minutes=i) for i in range(total)])
    with TestClient(create_app(tmp_path, token=TOKEN)) as made:
        made.get(f"/?token={TOKEN}")
        first = made.get("/").text
        last = made.get("/", params={"page": "3"}).text
    assert len(rows(first)) == PAGE_SIZE
    assert rows(first)[0] == f"r-{total - 1:04d}"
    assert 'rel="next" href="/?page=2"' in first
    assert 'rel="prev"' not in first
    assert rows(last) == [f"r-{i:04d}" for i in reversed(range(7))]
    assert 'rel="next"' not in last
    assert 'rel="prev" href="/?page=2"' in last


def test_pagination_keeps_the_filter(tmp_path: Path) -> None:
    runs = [
        FakeRun(f"r-{i:04d}", steps=(), metrics={"acc": i / 1000}, minutes=i) for i in range(150)
    ]
    make_project(tmp_path, runs)
    listing = api.ui_runs_page(tmp_path, metrics=["acc>=0.01"], offset=100, limit=100)
    assert len(listing["runs"]) == 40
    assert not listing["has_more"]
    with TestClient(create_app(tmp_path, token=TOKEN)) as made:
        made.get(f"/?token={TOKEN}")
        text = made.get("/", params={"q": "acc >= 0.01"}).text
    assert "page=2" in text
    assert "q=acc+%3E%3D+0.01" in text


def test_a_folder_without_runs_says_so(tmp_path: Path) -> None:
    with TestClient(create_app(tmp_path, token=TOKEN)) as made:
        made.get(f"/?token={TOKEN}")
        response = made.get("/")
    assert response.status_code == 200
    assert "no cellpipe project" in response.text


# -- a run -------------------------------------------------------------------------------------


def test_the_run_page_marks_what_live_updates(http: TestClient) -> None:
    text = http.get("/runs/a-4").text
    assert re.search(r'<main id="cp-main" data-run-id="a-4" data-run-status="running">', text)
    assert 'id="cp-run-status"' in text
    assert '<div id="cp-graph"><svg' in text
    for step in ("load", "train"):
        row = re.search(rf'<tr data-step="{step}">(.*?)</tr>', text)
        assert row is not None
        for css in ("cp-state", "cp-duration", "cp-reason"):
            assert f'class="{css}' in row.group(1)
        assert f'<pre class="cp-output" data-step="{step}"' in text
    assert '<script src="/static/live.js" defer></script>' in text
    assert '<script src="/static/app.js" defer></script>' in text


def test_a_finished_run_shows_parameters_metrics_and_steps(http: TestClient) -> None:
    text = http.get("/runs/a-1").text
    assert 'data-run-status="succeeded"' in text
    assert "MAX_DEPTH" in text
    assert "0.95" in text
    assert "miss: first run of this step" in text
    assert 'href="/runs/a-1/steps/train"' in text
    assert 'class="cp-output"' not in text
    assert 'class="cp-node"' in text


def test_a_run_by_prefix_and_latest(http: TestClient) -> None:
    assert 'data-run-id="a-4"' in http.get("/runs/latest").text


def test_an_unknown_run_is_not_found(http: TestClient) -> None:
    response = http.get("/runs/zzz")
    assert response.status_code == 404
    assert "zzz" in response.text


def test_the_graph_route_returns_the_svg_alone(http: TestClient) -> None:
    response = http.get("/runs/a-2/graph")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.text.startswith("<svg")
    assert 'data-id="load"' in response.text
    assert 'data-state="succeeded"' in response.text
    assert http.get("/runs/zzz/graph").status_code == 404


def test_the_step_page_has_log_values_and_files(http: TestClient) -> None:
    text = http.get("/runs/a-2/steps/train").text
    assert "step log line" in text
    assert "&lt;not a tag&gt;" in text
    assert "\x1b[" not in text
    assert "17 B" in text
    assert 'href="/runs/a-2/steps/train/log"' in text
    assert "Workspace files" in text
    log = http.get("/runs/a-2/steps/train/log")
    assert log.headers["content-type"].startswith("text/plain")
    assert log.text.startswith("step log line")


def test_an_unknown_step_is_not_found(http: TestClient) -> None:
    assert http.get("/runs/a-2/steps/nope").status_code == 404
    assert http.get("/sandbox/runs/a-2/steps/nope/outputs").status_code == 404
    assert http.get("/runs/a-2/steps/nope/log").status_code == 404


def test_the_navigation_marks_the_current_page(http: TestClient) -> None:
    text = http.get("/").text
    assert '<a href="/" aria-current="page">Runs</a>' in text
    assert '<a href="/new">New run</a>' in text
    assert '<a href="/models">Models</a>' in text
    assert "<main " in text


# -- the link printed while a UI runs ----------------------------------------------------------


def test_ui_url_while_registered_and_after(project: Path) -> None:
    assert api.ui_url("/runs/a-1", project=project) is None
    api.register_ui("http://127.0.0.1:9999/?token=abc", project=project)
    assert (project / ".cellpipe" / "ui.json").stat().st_mode & 0o077 == 0
    assert api.ui_url("/runs/a-1", project=project) == "http://127.0.0.1:9999/runs/a-1?token=abc"
    api.unregister_ui(project=project)
    assert api.ui_url("/runs/a-1", project=project) is None


def test_the_notebook_view_of_a_run_links_to_the_ui_without_its_token(project: Path) -> None:
    # A notebook's outputs are saved and shared: the link must not carry the token.
    assert api.show("a-1", project=project).ui_link is None
    api.register_ui("http://127.0.0.1:9999/?token=abc", project=project)
    try:
        detail = api.show("a-1", project=project)
        assert detail.ui_link == "http://127.0.0.1:9999/runs/a-1"
        html = detail._repr_html_()
        assert "href='http://127.0.0.1:9999/runs/a-1'" in html
        assert "token" not in html
        assert "ui_link" not in detail.to_dict()  # the --json document is unchanged
    finally:
        api.unregister_ui(project=project)


def test_ui_url_ignores_a_dead_process(project: Path) -> None:
    state = project / ".cellpipe" / "ui.json"
    state.write_text('{"url": "http://127.0.0.1:1/?token=x", "pid": 999999999}')
    assert api.ui_url(project=project) is None


def test_a_filter_reads_more_runs_until_enough_match(tmp_path: Path) -> None:
    runs = [
        FakeRun(f"r-{i:04d}", steps=(), metrics={"acc": 1.0 if i % 100 == 0 else 0.0}, minutes=i)
        for i in range(600)
    ]
    make_project(tmp_path, runs)
    first = api.ui_runs_page(tmp_path, metrics=["acc>0.5"], limit=5)
    assert [r["run_id"] for r in first["runs"]] == [
        "r-0500",
        "r-0400",
        "r-0300",
        "r-0200",
        "r-0100",
    ]
    assert first["has_more"]
    second = api.ui_runs_page(tmp_path, metrics=["acc>0.5"], offset=5, limit=5)
    assert [r["run_id"] for r in second["runs"]] == ["r-0000"]
    assert not second["has_more"]
