"""Submit through kfp.Client against a recording HTTP server on loopback (no cluster here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cellpipe.errors import CellpipeError
from cellpipe.kfp import compile_documents
from cellpipe.kfp.submit import submit_package
from cellpipe.kfp.yaml import dump_yaml

pytestmark = pytest.mark.kfp

NOTEBOOK = """
# %% tags=["pipeline-parameters"]
N = 2
# %% tags=["step:a"]
x = N
"""


class Recorder(BaseHTTPRequestHandler):
    requests: list[dict[str, object]]
    existing_pipeline: str | None = None

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append({"method": "GET", "path": self.path})
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._reply({"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiments": [], "total_size": 0})
        elif self.path.startswith("/apis/v2beta1/pipelines"):
            found = self.existing_pipeline
            self._reply({"pipelines": [{"pipeline_id": found}]} if found else {"pipelines": []})
        else:
            self._reply({})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.requests.append({"method": "POST", "path": self.path, "body": body})
        if self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": "wine"})
        elif self.path.startswith("/apis/v2beta1/runs"):
            self._reply({"run_id": "run-1", "display_name": "r"})
        elif self.path.startswith("/apis/v2beta1/pipelines/upload_version"):
            self._reply({"pipeline_id": "pipe-1", "pipeline_version_id": "ver-2"})
        elif self.path.startswith("/apis/v2beta1/pipelines/upload"):
            self._reply({"pipeline_id": "pipe-1", "display_name": "nb"})
        else:
            self._reply({})


@pytest.fixture
def server(monkeypatch, tmp_path) -> Iterator[tuple[str, type[Recorder]]]:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # kfp reads ~/.config/kfp/context.json
    handler = type("Handler", (Recorder,), {"requests": [], "existing_pipeline": None})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def package(make_pipeline, tmp_path) -> Path:
    documents = compile_documents(
        make_pipeline(NOTEBOOK), image=None, cellpipe_version="0.0.0", kfp_version="2.17.3"
    )
    path = tmp_path / "nb.yaml"
    path.write_text(dump_yaml(documents))
    return path


def test_run_sends_the_pipeline_spec_and_arguments(server, package):
    host, handler = server
    result = submit_package(
        package,
        host=host,
        pipeline_name="nb",
        experiment="wine",
        run_name="first",
        arguments={"N": 5},
    )
    assert result.kind == "run"
    assert result.ids == {"run_id": "run-1"}
    posts = [r for r in handler.requests if r["method"] == "POST"]
    assert [p["path"] for p in posts] == ["/apis/v2beta1/experiments", "/apis/v2beta1/runs"]
    assert json.loads(posts[0]["body"])["display_name"] == "wine"
    run = json.loads(posts[1]["body"])
    assert run["display_name"] == "first"
    assert run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {"N": 5}
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "nb"
    assert "exec-a" in run["pipeline_spec"]["deploymentSpec"]["executors"]


def test_upload_only_creates_a_pipeline_then_versions(server, package):
    host, handler = server
    first = submit_package(package, host=host, pipeline_name="nb", upload_only=True)
    assert first.kind == "pipeline"
    upload = next(r for r in handler.requests if r["method"] == "POST")
    assert upload["path"].startswith("/apis/v2beta1/pipelines/upload?")
    assert "name=nb" in upload["path"]
    assert b"pipelineInfo" in upload["body"]
    handler.existing_pipeline = "pipe-1"
    second = submit_package(package, host=host, pipeline_name="nb", upload_only=True)
    assert second.kind == "pipeline_version"
    assert second.ids["pipeline_version_id"] == "ver-2"
    version = [r for r in handler.requests if r["method"] == "POST"][-1]
    assert version["path"].startswith("/apis/v2beta1/pipelines/upload_version?")
    assert "pipelineid=pipe-1" in version["path"]


def test_unreachable_endpoint_is_a_cellpipe_error(package, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr("time.sleep", lambda _s: None)  # kfp retries healthz with sleeps
    with pytest.raises(CellpipeError, match=r"http://127\.0\.0\.1:9 refused or did not answer"):
        submit_package(package, host="http://127.0.0.1:9", pipeline_name="nb", upload_only=True)
