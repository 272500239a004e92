"""In Chromium: start a run from the UI, watch its steps change state live, cancel a run.

The gated step waits for a file the test creates once the page shows it running; every wait
is Playwright's `expect` for a condition (no sleeps, no wall-clock asserts).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from live_helpers import LIMIT_S, make_gated_project, open_gate
from ui_helpers import UiUrl

WAIT_MS = int(LIMIT_S * 1000)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_gated_project(tmp_path / "live")


def _expect() -> Any:
    return pytest.importorskip("playwright.sync_api").expect


def _state(page: Any, step: str) -> Any:
    return page.locator(f'tr[data-step="{step}"] .cp-state')


def _start(page: Any, url: UiUrl, gate: str) -> str:
    """Fill the /new form of tiny.py and run it; return the run id from the page's URL."""
    expect = _expect()
    page.goto(url.to("/new?notebook=tiny.py"))
    expect(page.locator("#p-N")).to_have_attribute("type", "number")
    expect(page.locator("#p-LOUD")).to_have_attribute("type", "checkbox")
    page.get_by_label("N", exact=True).fill("7")
    page.get_by_label("LOUD", exact=True).check()
    page.get_by_label("NAME", exact=True).fill(gate)
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r".*/runs/[^/]+$"), timeout=WAIT_MS)
    return str(page.url.rsplit("/", 1)[1])


def test_a_run_started_from_the_ui_updates_live(
    page: Any, ui_server: Callable[..., UiUrl], project: Path, shots: Path
) -> None:
    expect = _expect()
    url = ui_server(project)
    run_id = _start(page, url, "gate")
    main = page.locator("main")
    expect(main).to_have_attribute("data-run-id", run_id)
    expect(_state(page, "gated")).to_have_text("running", timeout=WAIT_MS)
    expect(_state(page, "first")).to_have_text("succeeded", timeout=WAIT_MS)
    expect(page.locator('pre.cp-output[data-step="first"]')).to_have_text(
        "first 7 0.5 True gate", timeout=WAIT_MS
    )
    expect(page.locator('#cp-graph g.cp-node[data-id="gated"]')).to_have_attribute(
        "data-state", "running", timeout=WAIT_MS
    )
    page.screenshot(path=str(shots / "running.png"), full_page=True)
    open_gate(project)  # only now: the page has shown the step running
    expect(_state(page, "gated")).to_have_text("succeeded", timeout=WAIT_MS)
    expect(page.locator("#cp-run-status")).to_have_text("succeeded", timeout=WAIT_MS)
    expect(main).to_have_attribute("data-run-status", "succeeded")
    expect(page.locator('pre.cp-output[data-step="gated"]')).to_have_text("through the gate")
    expect(page.locator('tr[data-step="gated"] .cp-duration')).to_have_text(re.compile(r"s$"))
    expect(page.locator('#cp-graph g.cp-node[data-id="gated"]')).to_have_attribute(
        "data-state", "succeeded", timeout=WAIT_MS
    )
    expect(page.locator("#cp-cancel")).to_have_count(0)
    page.screenshot(path=str(shots / "finished.png"), full_page=True)


def test_a_running_run_is_cancelled_from_its_page(
    page: Any, ui_server: Callable[..., UiUrl], project: Path, shots: Path
) -> None:
    expect = _expect()
    url = ui_server(project)
    _start(page, url, "never")
    expect(_state(page, "gated")).to_have_text("running", timeout=WAIT_MS)
    cancel = page.locator("#cp-cancel")
    expect(cancel).to_be_visible()
    cancel.focus()
    page.keyboard.press("Enter")  # reachable from the keyboard
    expect(page.locator("#cp-run-status")).to_have_text("cancelled", timeout=WAIT_MS)
    expect(_state(page, "gated")).to_have_text("cancelled", timeout=WAIT_MS)
    page.screenshot(path=str(shots / "cancelled.png"), full_page=True)


def test_a_run_started_in_a_terminal_is_followed_live(
    page: Any, ui_server: Callable[..., UiUrl], project: Path
) -> None:
    from cellpipe.ui.live import RunManager

    expect = _expect()
    url = ui_server(project)
    terminal = RunManager(project)  # not the UI's: the page follows it through the store
    try:
        started = terminal.start("tiny.py", {"NAME": "elsewhere"})
        page.goto(url.to(f"/runs/{started.run_id}"))
        expect(_state(page, "gated")).to_have_text("running", timeout=WAIT_MS)
        open_gate(project, "elsewhere")
        expect(_state(page, "gated")).to_have_text("succeeded", timeout=WAIT_MS)
        expect(page.locator("#cp-run-status")).to_have_text("succeeded", timeout=WAIT_MS)
        expect(page.locator('pre.cp-output[data-step="gated"]')).to_have_text("through the gate")
    finally:
        terminal.shutdown()
