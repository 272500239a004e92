"""The compare, lineage and models pages in headless Chromium (Debian's, through Playwright)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from ui_helpers import UiRuns, UiUrl


def open_page(page: Any, ui_url: UiUrl, path: str) -> Any:
    """Go to ``path`` of the UI (the token in the URL sets the cookie); return the response."""
    response = page.goto(ui_url.to(path))
    assert response is not None
    return response


def test_compare_highlights_differences_and_charts_metrics(
    page: Any, ui_url: UiUrl, ui_runs: UiRuns, shots: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    response = open_page(page, ui_url, f"/compare?run={ui_runs.first}&run={ui_runs.second}")
    assert response.status == 200
    expect(page.locator("h1")).to_have_text("Compare 2 runs")
    differs = page.locator("#cp-compare-parameters tbody tr.cp-differs th")
    expect(differs).to_have_count(3)  # C, MAX_DEPTH, TEST_SIZE; N_ESTIMATORS and SEED agree
    texts = " ".join(differs.all_inner_texts())
    assert "MAX_DEPTH" in texts
    assert "SEED" not in texts
    same = page.locator("#cp-compare-parameters tbody tr:not(.cp-differs) th")
    expect(same).to_have_count(2)
    marked = differs.first.evaluate("e => getComputedStyle(e).backgroundColor")
    plain = same.first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert marked != plain  # highlighted, and also said in words ("differs")
    expect(page.locator("#cp-compare-metrics tbody tr.cp-differs")).to_have_count(2)
    charts = page.locator("canvas[data-chart-ready='true']")
    expect(charts).to_have_count(2)
    values = page.evaluate(
        "() => [...document.querySelectorAll('canvas[data-metric]')].map("
        "c => [c.dataset.metric, c.cpChart.data.datasets[0].data])"
    )
    assert dict(values) == {"forest_acc": [1.0, 0.9213], "logreg_acc": [1.0, 0.9438]}
    box = charts.first.bounding_box()
    assert box is not None
    assert box["width"] > 100
    assert box["height"] > 100
    page.screenshot(path=str(shots / "compare.png"), full_page=True)
    assert errors == []


def test_compare_picker_leads_to_the_comparison(page: Any, ui_url: UiUrl, ui_runs: UiRuns) -> None:
    open_page(page, ui_url, "/compare")
    page.get_by_label(re.compile(re.escape(ui_runs.first))).check()
    page.get_by_label(re.compile(re.escape(ui_runs.second))).check()
    page.get_by_role("button", name="Compare").click()
    expect(page.locator("h1")).to_have_text("Compare 2 runs")
    assert f"run={ui_runs.first}" in page.url


def test_unknown_run_in_compare_is_a_404_page(page: Any, ui_url: UiUrl, ui_runs: UiRuns) -> None:
    response = open_page(page, ui_url, f"/compare?run={ui_runs.first}&run=no-such-run")
    assert response.status == 404
    expect(page.locator("main")).to_contain_text("no-such-run")


def test_lineage_of_a_run_links_its_nodes(
    page: Any, ui_url: UiUrl, ui_runs: UiRuns, shots: Path
) -> None:
    open_page(page, ui_url, f"/lineage?run={ui_runs.first}")
    expect(page.locator("h1")).to_have_text(f"Lineage of run {ui_runs.first}")
    graph = page.locator("#cp-lineage-graph svg")
    expect(graph).to_have_count(1)
    expect(page.locator("#cp-lineage-text")).to_contain_text(f"lineage of run {ui_runs.first}")
    steps = page.locator("#cp-lineage-graph a g.cp-node[data-kind='step']")
    expect(steps).to_have_count(5)
    page.screenshot(path=str(shots / "lineage-run.png"), full_page=True)
    page.locator(f"#cp-lineage-graph a:has(g[data-id='step:{ui_runs.first}/split'])").click()
    expect(page).to_have_url(re.compile(rf"/runs/{re.escape(ui_runs.first)}/steps/split$"))


def test_lineage_of_an_artifact_is_truncated_as_the_cli_does(
    page: Any, ui_url: UiUrl, ui_project: Path, ui_runs: UiRuns, shots: Path
) -> None:
    from cellpipe import api

    # X_test of the first run is read by train_forest, train_logreg and evaluate
    run = api.lineage(ui_runs.first, project=ui_project).to_dict()
    readers: dict[str, int] = {}
    for edge in run["edges"]:
        if edge["source"].startswith("artifact:"):
            readers[edge["source"]] = readers.get(edge["source"], 0) + 1
    digest = max(readers, key=lambda k: readers[k]).removeprefix("artifact:")
    assert readers["artifact:" + digest] >= 3
    cli = api.lineage(artifact=digest, limit=1, project=ui_project).to_dict()
    assert cli["truncated"]
    open_page(page, ui_url, f"/lineage?artifact={digest}&limit=1")
    expect(page.locator("h1")).to_have_text(f"Lineage of artifact {digest}")
    steps = page.locator("#cp-lineage-graph g.cp-node[data-kind='step']")
    expect(steps).to_have_count(sum(1 for n in cli["nodes"] if n["kind"] == "step_run"))
    note = page.locator("p.cp-note", has_text="At most 1 step runs")
    expect(note).to_have_count(1)
    page.screenshot(path=str(shots / "lineage-artifact-truncated.png"), full_page=True)
    note.get_by_role("link", name="show all").click()
    expect(page.locator("p.cp-note", has_text="At most")).to_have_count(0)
    full = api.lineage(artifact=digest, limit=0, project=ui_project).to_dict()
    expect(steps).to_have_count(sum(1 for n in full["nodes"] if n["kind"] == "step_run"))
    expect(
        page.locator("table.cp-table").get_by_role("link", name="download").first
    ).to_be_visible()
    bad = open_page(page, ui_url, "/lineage?artifact=sha256:ffffffffffff")
    assert bad.status in (400, 404)


def test_models_pages(page: Any, ui_url: UiUrl, ui_runs: UiRuns, shots: Path) -> None:
    open_page(page, ui_url, "/models")
    table = page.locator("#cp-models")
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table).to_contain_text("production → 2")
    page.screenshot(path=str(shots / "models.png"), full_page=True)
    table.get_by_role("link", name="wine", exact=True).click()
    expect(page.locator("h1")).to_have_text("Model wine")
    expect(page.locator("#cp-versions tbody tr")).to_have_count(2)
    expect(page.locator("#cp-versions")).to_contain_text(ui_runs.first)
    expect(page.locator("#cp-versions")).to_contain_text(ui_runs.second)
    expect(page.locator("#cp-aliases tbody tr")).to_have_count(1)
    # registered with production (-> 2), moved to 1, moved back to 2: newest first
    history = page.locator("#cp-alias-history tbody tr")
    expect(history).to_have_count(3)
    expect(history.first.locator("td").nth(3)).to_have_text("2")
    expect(history.nth(1).locator("td").nth(3)).to_have_text("1")
    page.screenshot(path=str(shots / "model.png"), full_page=True)
    page.locator("#cp-versions").get_by_role("link", name="1", exact=True).click()
    expect(page.locator("h1")).to_have_text("Model wine version 1")
    expect(page.locator("main")).to_contain_text("cellpipe serve wine:1")
    expect(page.locator("#cp-signature tbody tr").first).to_be_visible()
    expect(page.locator("#cp-model-lineage svg")).to_have_count(1)
    page.screenshot(path=str(shots / "model-version.png"), full_page=True)
    page.locator("#cp-version").get_by_role("link", name=ui_runs.first).click()
    expect(page).to_have_url(re.compile(rf"/runs/{re.escape(ui_runs.first)}$"))
    alias = open_page(page, ui_url, "/models/wine/production")
    assert alias.status == 200
    expect(page.locator("h1")).to_have_text("Model wine version 2")
    expect(page.locator("main")).to_contain_text("cellpipe serve wine@production")
    missing = open_page(page, ui_url, "/models/no-such-model")
    assert missing.status == 404
