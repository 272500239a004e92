"""The ``/new`` start-run form: the project's notebooks, typed parameter fields, errors shown
escaped in the form, a started run redirecting to its page. Through the real app and token."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_helpers import LIMIT_S, make_gated_project, open_gate
from ui_helpers import UiUrl

from cellpipe import api


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = make_gated_project(tmp_path / "proj")
    (folder / "sub").mkdir()
    (folder / "sub" / "other.py").write_text('# %% tags=["step:only"]\nx = 1\n')
    (folder / "helper.py").write_text("def f():\n    return 1\n")  # not a percent script
    (folder / ".cellpipe" / "inside.py").write_text('# %% tags=["step:a"]\nx = 1\n')
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "h.ipynb").write_text("{}")
    (folder / "broken.py").write_text('# %% tags=["step:a"]\nx = (\n')
    return folder


@pytest.fixture
def http(ui_server: Callable[..., UiUrl], project: Path) -> Iterator[tuple[httpx.Client, UiUrl]]:
    url = ui_server(project)
    with httpx.Client(timeout=LIMIT_S, follow_redirects=False) as client:
        # The token once, then the cookie (as a browser does).
        assert client.get(url.to("/new")).status_code == 303
        yield client, url


def _post(client: httpx.Client, url: UiUrl, data: dict[str, str]) -> httpx.Response:
    return client.post(f"{url.base}/new", data=data, headers={"Origin": url.base})


def _input(html: str, ident: str) -> dict[str, str]:
    match = re.search(rf'<input [^>]*id="{re.escape(ident)}"[^>]*>', html)
    assert match, ident
    inner = match.group(0)[len("<input ") : -1]
    return dict(re.findall(r'([\w-]+)(?:="([^"]*)")?', inner))  # bare ones: ""


def test_the_project_notebooks_are_listed(project: Path) -> None:
    assert api.project_notebooks(project) == ["broken.py", "sub/other.py", "tiny.py"]


def test_the_picker_lists_the_notebooks(http: tuple[httpx.Client, UiUrl]) -> None:
    client, url = http
    page = client.get(f"{url.base}/new").text
    options = re.findall(r'<option value="([^"]*)"', page)
    assert options == ["broken.py", "sub/other.py", "tiny.py"]
    assert '<label for="cp-notebook">' in page


def test_parameters_are_fields_typed_as_declared(http: tuple[httpx.Client, UiUrl]) -> None:
    client, url = http
    page = client.get(f"{url.base}/new", params={"notebook": "tiny.py"}).text
    assert _input(page, "p-N")["type"] == "number"
    assert _input(page, "p-N")["step"] == "1"
    assert _input(page, "p-N")["value"] == "3"
    assert _input(page, "p-RATE")["type"] == "number"
    assert _input(page, "p-RATE")["step"] == "any"
    assert _input(page, "p-RATE")["value"] == "0.5"
    assert _input(page, "p-LOUD")["type"] == "checkbox"
    assert "checked" not in _input(page, "p-LOUD")
    assert _input(page, "p-NAME")["type"] == "text"
    assert _input(page, "p-NAME")["value"] == "gate"
    for name in ("N", "RATE", "LOUD", "NAME"):
        assert f'<label for="p-{name}">{name}</label>' in page


def test_query_values_fill_the_fields(http: tuple[httpx.Client, UiUrl]) -> None:
    client, url = http
    query = {"notebook": "tiny.py", "param.N": "9", "param.LOUD": "true", "param.NAME": '"x'}
    page = client.get(f"{url.base}/new", params=query).text
    assert _input(page, "p-N")["value"] == "9"
    assert "checked" in _input(page, "p-LOUD")
    assert _input(page, "p-NAME")["value"] == "&quot;x"
    assert _input(page, "p-RATE")["value"] == "0.5"


def test_an_invalid_notebook_says_why(http: tuple[httpx.Client, UiUrl]) -> None:
    client, url = http
    page = client.get(f"{url.base}/new", params={"notebook": "broken.py"}).text
    assert "broken.py cannot run" in page
    assert 'id="cp-run"' not in page


def test_a_bad_value_is_shown_in_the_form_escaped(http: tuple[httpx.Client, UiUrl]) -> None:
    client, url = http
    response = _post(
        client,
        url,
        {"notebook": "tiny.py", "param.N": "<b>x</b>", "param.LOUD": "false", "param.NAME": "g"},
    )
    assert response.status_code == 400
    assert "The run did not start." in response.text
    assert "&#x27;&lt;b&gt;x&lt;/b&gt;&#x27; is not an int" in response.text
    assert "<b>x</b>" not in response.text
    assert _input(response.text, "p-N")["value"] == "&lt;b&gt;x&lt;/b&gt;"  # kept, escaped


def test_a_notebook_outside_the_project_is_refused(
    http: tuple[httpx.Client, UiUrl], project: Path
) -> None:
    client, url = http
    (project.parent / "outside.py").write_text('# %% tags=["step:a"]\nx = 1\n')
    response = _post(client, url, {"notebook": "../outside.py"})
    assert response.status_code == 400
    assert "not a notebook of this project" in response.text


def test_a_cross_site_post_starts_nothing(http: tuple[httpx.Client, UiUrl]) -> None:
    client, url = http
    response = client.post(
        f"{url.base}/new", data={"notebook": "tiny.py"}, headers={"Origin": "http://evil.test"}
    )
    assert response.status_code == 403


def test_a_started_run_redirects_to_its_page(
    http: tuple[httpx.Client, UiUrl], project: Path
) -> None:
    client, url = http
    open_gate(project, "quick")
    data = {
        "notebook": "tiny.py",
        "param.N": "7",
        "param.RATE": "1.5",
        "param.LOUD": "true",
        "param.NAME": "quick",
    }
    response = _post(client, url, data)
    assert response.status_code == 303
    location = response.headers["location"]
    run_id = location.rsplit("/", 1)[1]
    assert location == f"/runs/{run_id}"
    with client.stream("GET", f"{url.base}/api/runs/{run_id}/events") as stream:
        last: dict[str, Any] = {}
        for line in stream.iter_lines():
            if line.startswith("data: "):
                last = json.loads(line[len("data: ") :])
    assert last["event"] == "summary"
    assert last["parameters"] == {"N": 7, "RATE": 1.5, "LOUD": True, "NAME": "quick"}
