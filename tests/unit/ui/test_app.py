"""The web UI's app in process (Starlette's TestClient): the token, headers, escaping, paths."""

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
from cellpipe.ui.app import COOKIE, CSP, SANDBOX_CSP, create_app
from ui_fake_project import FakeRun, make_project

TOKEN = "t0ken-for-tests"
EVIL = "<script>alert('x')</script>"


def client(project: Path | None, *, login: bool = True) -> TestClient:
    made = TestClient(create_app(project, token=TOKEN), follow_redirects=False)
    if login:
        assert made.get(f"/?token={TOKEN}").status_code == 303
    return made


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(
        tmp_path,
        [
            FakeRun("train-1", parameters={"MAX_DEPTH": 4}, metrics={"acc": 0.95}, minutes=1),
            FakeRun("train-2", parameters={"MAX_DEPTH": 6}, metrics={"acc": 0.80}, minutes=2),
            FakeRun(
                "train-3",
                status="failed",
                parameters={"MAX_DEPTH": 6, "NOTE": EVIL},
                metrics={EVIL: 1.0},
                error=f"boom {EVIL}",
                step_error=f"Traceback {EVIL}",
                minutes=3,
            ),
            FakeRun("train-4", status="running", minutes=4),
        ],
    )


@pytest.fixture
def app_client(project: Path) -> Iterator[TestClient]:
    with client(project) as made:
        yield made


# -- the token ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/runs/train-1", "/static/app.css", "/sandbox/runs/train-1/steps/load/outputs"]
)
def test_every_route_needs_the_token(project: Path, path: str) -> None:
    anonymous = client(project, login=False)
    response = anonymous.get(path)
    assert response.status_code == 403
    assert "token" in response.text
    assert "train-1" not in response.text


def test_a_wrong_token_is_refused(project: Path) -> None:
    response = client(project, login=False).get("/?token=not-it")
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_the_token_sets_a_strict_cookie_and_redirects_without_it(project: Path) -> None:
    anonymous = client(project, login=False)
    response = anonymous.get(f"/runs/train-1?token={TOKEN}&x=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/runs/train-1?x=1"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN};")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert anonymous.get("/runs/train-1").status_code == 200


def test_a_post_needs_a_same_origin_request(app_client: TestClient) -> None:
    # No route takes POST at "/": 405 means the request got past the token check.
    assert app_client.post("/").status_code == 403  # no Origin, no Sec-Fetch-Site
    assert app_client.post("/", headers={"Origin": "http://evil.example"}).status_code == 403
    assert app_client.post("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert app_client.post("/", headers={"Origin": "http://testserver"}).status_code == 405
    assert app_client.post("/", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 405


def test_a_post_with_the_token_in_the_query_only_is_refused(project: Path) -> None:
    anonymous = client(project, login=False)
    response = anonymous.post(f"/?token={TOKEN}", headers={"Origin": "http://testserver"})
    assert response.status_code == 403


def test_a_bearer_token_is_enough_for_scripts(project: Path) -> None:
    anonymous = client(project, login=False)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert anonymous.get("/", headers=headers).status_code == 200
    assert anonymous.post("/", headers=headers).status_code == 405
    wrong = {"Authorization": "Bearer nope"}
    assert anonymous.get("/", headers=wrong).status_code == 403


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("127.0.0.1:8123", True), ("localhost:8123", True), ("[::1]:8123", True),
     ("LOCALHOST", True), ("attacker.example:8123", False), ("127.0.0.1.nip.io", False),
     ("", False), ("[::1", False)],
)  # fmt: skip
def test_a_loopback_ui_answers_only_to_loopback_host_names(
    project: Path, host: str, allowed: bool
) -> None:
    # DNS rebinding: a page of attacker.example whose name now resolves to 127.0.0.1 sends
    # `Host: attacker.example`; it is refused even with the token.
    from cellpipe.ui.server import loopback_hosts

    app = create_app(project, token=TOKEN, allowed_hosts=loopback_hosts("127.0.0.1"))
    made = TestClient(app, follow_redirects=False)
    response = made.get("/", headers={"Host": host, "Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == (200 if allowed else 403)
    if not allowed:
        assert "answers only to" in response.text
        assert response.headers["content-security-policy"] == CSP


def test_create_app_refuses_an_empty_token() -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(None, token="")


# -- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/runs/train-1", "/static/app.js", "/runs/nope"])
def test_pages_carry_the_security_headers(app_client: TestClient, path: str) -> None:
    response = app_client.get(path)
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


def test_a_refusal_carries_the_security_headers(project: Path) -> None:
    response = client(project, login=False).get("/")
    assert response.headers["content-security-policy"] == CSP


def test_sandboxed_outputs_get_the_sandbox_policy(app_client: TestClient) -> None:
    response = app_client.get("/sandbox/runs/train-1/steps/load/outputs")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == SANDBOX_CSP
    assert "x-frame-options" not in response.headers
    # notebook HTML is kept as HTML (only in the sandbox); text is escaped
    assert "<table id='frame-html'>" in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert "<script>" not in response.text


def test_the_step_page_frames_outputs_in_a_sandbox(app_client: TestClient) -> None:
    text = app_client.get("/runs/train-1/steps/load").text
    frame = re.search(r"<iframe[^>]*>", text)
    assert frame is not None
    tag = frame.group(0)
    assert re.search(r"\bsandbox\b", tag)
    assert "allow-scripts" not in tag
    assert "allow-same-origin" not in tag
    assert 'src="/sandbox/runs/train-1/steps/load/outputs"' in tag
    assert "<table id='frame-html'>" not in text  # never in the page itself


# -- escaping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/runs/train-3", "/runs/train-3/steps/load", "/?q=status:failed"]
)
def test_recorded_values_are_escaped(app_client: TestClient, path: str) -> None:
    text = app_client.get(path).text
    assert EVIL not in text
    assert "&lt;script&gt;" in text


def test_a_step_name_in_the_url_is_escaped(app_client: TestClient) -> None:
    response = app_client.get("/runs/train-1/steps/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert response.status_code == 404
    assert "<img src=x" not in response.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in response.text


def test_the_filter_text_is_escaped(app_client: TestClient) -> None:
    response = app_client.get("/", params={"q": '"><script>alert(1)</script>'})
    assert "<script>alert(1)" not in response.text


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/artifacts/../../etc/passwd",
        "/artifacts/..%2F..%2Fetc%2Fpasswd",
        "/artifacts/sha256:..%2F..%2F..%2Fetc%2Fpasswd",
        "/artifacts/%2Fetc%2Fpasswd",
        "/sandbox/runs/..%2F..%2Fetc%2Fpasswd/steps/x/outputs",
        "/sandbox/../../etc/passwd",
        "/static/..%2F..%2Fapi.py",
        "/static/../api.py",
        "/runs/..%2F..%2Fetc%2Fpasswd/steps/x/log",
    ],
)
def test_no_file_outside_the_project_is_served(app_client: TestClient, path: str) -> None:
    response = app_client.get(path)
    assert response.status_code == 404
    assert "root:" not in response.text
    assert "def create_app" not in response.text


def test_an_artifact_downloads_by_digest(app_client: TestClient) -> None:
    page = app_client.get("/runs/train-1/steps/train").text
    link = re.search(r'href="(/artifacts/sha256:[0-9a-f]{64})"', page)
    assert link is not None
    response = app_client.get(link.group(1))
    assert response.status_code == 200
    assert response.content == b"the value's bytes"
    assert "attachment" in response.headers["content-disposition"]


def test_an_unknown_digest_is_not_found(app_client: TestClient) -> None:
    assert app_client.get("/artifacts/sha256:" + "0" * 64).status_code == 404


def test_a_browser_post_with_a_null_origin_counts_by_sec_fetch_site(app_client: TestClient) -> None:
    # `Referrer-Policy: no-referrer` makes Chromium send `Origin: null` on same-origin posts.
    same = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    assert app_client.post("/", headers=same).status_code == 405
    assert app_client.post("/", headers={"Origin": "null"}).status_code == 403
    cross = {"Origin": "null", "Sec-Fetch-Site": "cross-site"}
    assert app_client.post("/", headers=cross).status_code == 403
