"""views/report.py: the report's header, its graph and the removal of remote assets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cellpipe.storage.records import RunRecord, RunStatus, StepRunRecord, StepStatus
from cellpipe.views.report import report_header, run_graph, strip_remote_assets

START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _run() -> RunRecord:
    return RunRecord(
        run_id="nb-20261203-120000-abcdef",
        pipeline="nb",
        notebook="/p/<nb>.ipynb",
        notebook_digest="sha256:" + "0" * 64,
        status=RunStatus.SUCCEEDED,
        started_at=START,
        finished_at=START + timedelta(seconds=3),
        parameters={"LABEL": "<script>alert(1)</script>", "N": 3},
        metrics={"acc": 0.912345678},
    )


def _steps() -> list[StepRunRecord]:
    return [
        StepRunRecord(run_id="r", step="a", status=StepStatus.SUCCEEDED, cache_reason="miss"),
        StepRunRecord(
            run_id="r",
            step="b",
            status=StepStatus.CACHED,
            cache_reason="hit: same code",
            input_sources={"x": "a", "y": "a"},
        ),
        StepRunRecord(
            run_id="r", step="c", status=StepStatus.FAILED, input_sources={"x": "a", "z": "b"}
        ),
    ]


def test_run_graph_has_one_edge_per_producer_labelled_by_variables() -> None:
    nodes, edges = run_graph(_steps())
    assert [(n.id, n.state) for n in nodes] == [
        ("a", "succeeded"),
        ("b", "cached"),
        ("c", "failed"),
    ]
    assert edges == [("a", "b", "x, y"), ("a", "c", "x"), ("b", "c", "z")]


def test_header_escapes_values_and_shows_graph_parameters_metrics() -> None:
    header = report_header(_run(), _steps())
    assert "<script>" not in header
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in header
    assert "/p/&lt;nb&gt;.ipynb" in header
    assert "<svg" in header
    assert "<td>0.912346</td>" in header
    assert "took 3.0 s" in header
    assert "hit: same code" in header


def test_strip_remote_assets_keeps_inline_scripts() -> None:
    page = (
        '<head><script src="https://cdn.example/require.min.js"></script>'
        "<script src=//cdn.example/x.js></script>"
        '<link rel="stylesheet" href="https://fonts.example/font.css">'
        '<script type="module">const m = await import("https://cdn.example/m.mjs");</script>'
        '<script>const elkUrl = "https://cdn.example/elk.mjs";</script>'
        "<script>var inline = 1;</script>"
        '<link rel="stylesheet" href="local.css"></head>'
    )
    assert strip_remote_assets(page) == (
        '<head><script>var inline = 1;</script><link rel="stylesheet" href="local.css"></head>'
    )
