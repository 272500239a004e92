"""The runs, run and step pages in headless Chromium: click through, sort, filter, keyboard."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ui_helpers import UiRuns, UiUrl


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def test_runs_page_lists_sorts_and_filters(
    page: Any, ui_url: UiUrl, ui_runs: UiRuns, shots: Path
) -> None:
    expect = _expect()
    page.goto(str(ui_url))
    expect(page).to_have_url(re.compile(r"/$"))  # the token went into a cookie
    rows = page.locator("table.cp-runs tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-run-id", ui_runs.second)  # newest first
    page.screenshot(path=str(shots / "runs.png"), full_page=True)

    header = page.get_by_role("button", name="MAX_DEPTH")
    header.click()
    expect(page.locator("th[aria-sort=ascending]")).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run-id", ui_runs.second)  # MAX_DEPTH=1
    header.click()
    expect(page.locator("th[aria-sort=descending]")).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run-id", ui_runs.first)

    page.get_by_label("Find in this page").fill(ui_runs.first)
    expect(page.locator("table.cp-runs tbody tr:visible")).to_have_count(1)
    page.get_by_label("Find in this page").fill("")
    expect(page.locator("table.cp-runs tbody tr:visible")).to_have_count(2)

    page.get_by_label("Filter runs").fill("MAX_DEPTH=1")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run-id", ui_runs.second)
    page.get_by_label("Filter runs").fill("status:failed")
    page.get_by_label("Filter runs").press("Enter")
    expect(page.locator(".cp-empty")).to_be_visible()


def test_select_two_runs_and_compare(page: Any, ui_url: UiUrl, ui_runs: UiRuns) -> None:
    expect = _expect()
    page.goto(str(ui_url))
    page.get_by_label(f"Select run {ui_runs.first}").check()
    page.get_by_label(f"Select run {ui_runs.second}").check()
    page.get_by_role("button", name="Compare selected runs").click()
    expect(page).to_have_url(re.compile(r"/compare\?run=.+&run=.+"))
    assert f"run={ui_runs.first}" in page.url
    assert f"run={ui_runs.second}" in page.url


def test_click_through_a_run_to_a_step(
    page: Any, ui_url: UiUrl, ui_runs: UiRuns, shots: Path
) -> None:
    expect = _expect()
    page.goto(str(ui_url))
    page.get_by_role("link", name=ui_runs.first).click()
    expect(page).to_have_url(re.compile(f"/runs/{ui_runs.first}$"))
    expect(page.locator("#cp-run-status")).to_have_text("succeeded")
    main = page.locator("main")
    expect(main).to_have_attribute("data-run-id", ui_runs.first)
    nodes = page.locator("#cp-graph svg .cp-node")
    expect(nodes).to_have_count(5)
    expect(page.locator('#cp-graph .cp-node[data-id="evaluate"]')).to_have_attribute(
        "data-state", "succeeded"
    )
    steps = page.locator("table.cp-steps tbody tr")
    expect(steps).to_have_count(5)
    expect(page.locator('tr[data-step="load_data"] .cp-reason')).to_contain_text("miss")
    page.screenshot(path=str(shots / "run.png"), full_page=True)

    page.get_by_role("link", name="evaluate", exact=True).click()
    expect(page).to_have_url(re.compile(f"/runs/{ui_runs.first}/steps/evaluate$"))
    expect(page.get_by_role("heading", name="Log")).to_be_visible()
    expect(page.locator("pre.cp-log")).to_contain_text("best model")
    frame = page.locator("iframe.cp-sandbox")
    expect(frame).to_have_attribute("sandbox", "")
    inside = page.frame_locator("iframe.cp-sandbox")
    expect(inside.locator("img").first).to_be_visible()  # the confusion-matrix figure
    expect(page.get_by_role("link", name=re.compile("^Download"))).not_to_have_count(0)
    page.screenshot(path=str(shots / "step.png"), full_page=True)


def test_a_cached_step_links_to_the_run_that_computed_it(
    page: Any, ui_url: UiUrl, ui_runs: UiRuns
) -> None:
    expect = _expect()
    page.goto(ui_url.to(f"/runs/{ui_runs.second}/steps/load_data"))
    expect(page.locator(".cp-facts")).to_contain_text("hit")
    page.get_by_role("link", name=re.compile("computed in")).click()
    expect(page).to_have_url(re.compile(f"/runs/{ui_runs.first}/steps/load_data$"))


def test_keyboard_reaches_and_follows_links(page: Any, ui_url: UiUrl, ui_runs: UiRuns) -> None:
    expect = _expect()
    page.goto(str(ui_url))
    page.keyboard.press("Tab")
    expect(page.locator(".cp-skip")).to_be_focused()
    for _ in range(40):  # skip link, brand, nav, form, ... then the first run's link
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent")
        if focused == ui_runs.second:
            break
    else:
        raise AssertionError("Tab never reached the newest run's link")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"/runs/{ui_runs.second}$"))


def test_every_form_field_has_a_label(page: Any, ui_url: UiUrl) -> None:
    page.goto(str(ui_url))
    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input, select, textarea'))
              .filter(e => e.type !== 'hidden')
              .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
              .map(e => e.outerHTML)"""
    )
    assert unlabelled == []
    assert page.locator("main").count() == 1
    assert page.get_by_role("navigation", name="Main").count() == 1


def test_outputs_cannot_reach_the_page(page: Any, ui_url: UiUrl, ui_runs: UiRuns) -> None:
    expect = _expect()
    page.goto(ui_url.to(f"/runs/{ui_runs.first}/steps/evaluate"))
    expect(page.locator("iframe.cp-sandbox")).to_be_visible()
    frame = next(f for f in page.frames if "/sandbox/" in f.url)
    frame.wait_for_load_state()
    # an opaque origin: the frame's document cannot read the parent nor the cookie
    assert (
        frame.evaluate(
            "() => { try { return parent.document.title } catch (e) { return 'blocked' } }"
        )
        == "blocked"
    )
    assert (
        frame.evaluate("() => { try { return document.cookie } catch (e) { return 'blocked' } }")
        == "blocked"
    )
