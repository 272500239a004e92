"""Notebook HTML stays in its sandbox; a11y basics of every page (labels, headers, keyboard)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect
from ui_helpers import UiRuns, UiUrl

import ui_fake_project

HOSTILE_HTML = (
    "<p id='hostile'>notebook html</p>"
    "<script>window.parent.document.body.setAttribute('data-pwned', 'script')</script>"
    "<img src='x' onerror=\"window.parent.document.body.setAttribute('data-pwned', 'img')\">"
    "<form action='/api/runs' method='post' target='_top'><button id='go'>go</button></form>"
)


def _sandbox_frame(page: Any) -> Any:
    frame_element = page.locator("iframe.cp-sandbox").first
    frame_element.scroll_into_view_if_needed()
    expect(frame_element).to_be_visible()
    frame = frame_element.element_handle().content_frame()
    assert frame is not None
    frame.wait_for_load_state()
    return frame_element, frame


def test_notebook_html_cannot_reach_the_parent_page(
    page: Any, ui_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shots: Path
) -> None:
    executed = copy.deepcopy(ui_fake_project.EXECUTED)
    executed["cells"][0]["outputs"][1]["data"]["text/html"] = HOSTILE_HTML
    monkeypatch.setattr(ui_fake_project, "EXECUTED", executed)
    project = ui_fake_project.make_project(tmp_path, [ui_fake_project.FakeRun("train-1")])
    url: UiUrl = ui_server(project)
    page.goto(url.to("/runs/train-1/steps/load"))
    frame_element, frame = _sandbox_frame(page)
    # sandboxed without any allow-* token: no scripts, an opaque origin, no top navigation
    assert frame_element.get_attribute("sandbox") == ""
    assert frame.url.startswith(url.base + "/sandbox/")
    expect(frame.locator("#hostile")).to_have_text("notebook html")
    with pytest.raises(PlaywrightError):
        frame.evaluate("() => window.parent.document.body.innerHTML")
    assert frame.evaluate("() => window.origin") == "null"
    assert page.evaluate("() => document.body.getAttribute('data-pwned')") is None
    frame.locator("#go").click(no_wait_after=True)
    page.wait_for_timeout(0)
    assert page.url.startswith(url.base + "/runs/train-1/steps/load")
    assert page.evaluate("() => document.body.getAttribute('data-pwned')") is None
    page.screenshot(path=str(shots / "step-sandbox.png"), full_page=True)


def test_the_wine_figure_is_shown_in_the_sandbox(
    page: Any, ui_url: UiUrl, ui_runs: UiRuns, shots: Path
) -> None:
    page.goto(ui_url.to(f"/runs/{ui_runs.first}/steps/evaluate"))
    _, frame = _sandbox_frame(page)
    image = frame.locator("img").first
    expect(image).to_be_visible()
    assert (image.get_attribute("src") or "").startswith("data:image/png")
    with pytest.raises(PlaywrightError):
        frame.evaluate("() => window.parent.location.href")
    page.screenshot(path=str(shots / "step-evaluate.png"), full_page=True)


def _pages(ui_runs: UiRuns) -> list[str]:
    first, second = ui_runs.first, ui_runs.second
    return [
        "/",
        f"/runs/{first}",
        f"/runs/{first}/steps/train_forest",
        f"/compare?run={first}&run={second}",
        "/compare",
        f"/lineage?run={first}",
        "/lineage",
        "/models",
        "/models/wine",
        "/models/wine/1",
        "/new",
    ]


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(e => e.type !== 'hidden')
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !e.getAttribute('aria-labelledby') && !e.closest('label'))
  .map(e => e.outerHTML)"""

HEADERLESS = """() => [...document.querySelectorAll('table')]
  .filter(t => !t.querySelector('th'))
  .map(t => t.outerHTML.slice(0, 200))"""

UNNAMED = """() => [...document.querySelectorAll('a[href], button')]
  .filter(e => !(e.innerText || '').trim() && !e.getAttribute('aria-label')
               && !e.getAttribute('title') && !e.querySelector('title, img[alt]'))
  .map(e => e.outerHTML.slice(0, 200))"""


def test_a11y_basics_on_every_page(page: Any, ui_url: UiUrl, ui_runs: UiRuns) -> None:
    page.goto(str(ui_url))
    for path in _pages(ui_runs):
        response = page.goto(ui_url.base + path)
        assert response is not None
        assert response.status == 200, path
        assert page.evaluate("() => document.documentElement.lang") == "en", path
        assert page.title(), path
        expect(page.locator("main")).to_have_count(1)
        assert page.locator("h1").count() >= 1, path
        assert page.evaluate(UNLABELLED) == [], path
        assert page.evaluate(HEADERLESS) == [], path
        assert page.evaluate(UNNAMED) == [], path


def test_tab_reaches_the_navigation_links(page: Any, ui_url: UiUrl, ui_runs: UiRuns) -> None:
    for path in ("/models", f"/compare?run={ui_runs.first}&run={ui_runs.second}"):
        page.goto(ui_url.to(path))
        page.locator("body").focus()
        reached = set()
        for _ in range(8):
            page.keyboard.press("Tab")
            reached.add(page.evaluate("() => (document.activeElement.innerText || '').trim()"))
        assert {"Runs", "New run", "Models"} <= reached, (path, reached)
        # Enter on the focused "Models" link follows it
        page.goto(ui_url.base + path)
        for _ in range(8):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.innerText") == "Models":
                break
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/models$"))
