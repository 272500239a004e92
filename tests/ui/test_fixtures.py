"""The UI test fixtures themselves: the project's runs and model, the browser, the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ui_helpers import UiRuns, UiUrl, chromium_path

from cellpipe import api


def test_ui_project_has_two_finished_runs_and_a_model(ui_project: Path, ui_runs: UiRuns) -> None:
    runs = api.runs(project=ui_project).to_dict()["runs"]
    assert {r["run_id"] for r in runs} == {ui_runs.first, ui_runs.second}
    assert {r["status"] for r in runs} == {"succeeded"}
    history = api.alias_history(ui_runs.model, project=ui_project)
    assert history["aliases"] == {"production": 2}


def test_browser_is_debian_chromium(page: Any) -> None:
    assert chromium_path() is not None
    page.set_content("<main><h1>hello</h1></main>")
    assert page.locator("h1").inner_text() == "hello"


def test_ui_server_needs_the_token(ui_url: UiUrl) -> None:
    import httpx

    with httpx.Client(follow_redirects=False) as client:
        assert client.get(ui_url.base + "/").status_code == 403
        first = client.get(str(ui_url))
        assert first.status_code == 303
        assert client.get(ui_url.base + "/static/app.css").status_code == 200
