"""`cellpipe serve` end to end: a run's model, registered, served by the real command."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import cellpipe

pytestmark = pytest.mark.e2e

NOTEBOOK = """\
# %% tags=["imports"]
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

# %% tags=["step:train"]
x, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=500).fit(x, y)

# %% tags=["step:evaluate"]
accuracy = float(model.score(x, y))

# %% tags=["pipeline-metrics"]
accuracy
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _post(url: str, document: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def project(tmp_path: Path, run_cli: Any) -> Path:
    folder = tmp_path / "iris"
    folder.mkdir()
    (folder / "iris.py").write_text(NOTEBOOK)
    result = run_cli("run", folder / "iris.py", "--json")
    assert result.code == 0, result.err
    run = json.loads(result.out.splitlines()[-1])["run_id"]
    at = ("--project", folder)
    registered = run_cli("models", "register", "iris", "--run", run, "--step", "train",
                         "--var", "model", "--alias", "production", *at)  # fmt: skip
    assert registered.code == 0, registered.err
    return folder


def test_the_command_serves_a_registered_model_until_interrupted(project: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", "from cellpipe.cli.main import entry; entry()",
               "serve", "iris@production", "--port", str(port), "--json"]  # fmt: skip
    server = subprocess.Popen(
        command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{base}/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        status, metadata = _get(f"{base}/v2/models/iris")
        assert status == 200
        assert (metadata["name"], metadata["versions"]) == ("iris", ["1"])
        assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]

        model = cellpipe.load_model("iris@production", project=project)
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
        request = {
            "id": "req-1",
            "inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64",
                        "data": [v for row in rows for v in row]}],
        }  # fmt: skip
        status, answer = _post(f"{base}/v2/models/iris/infer", request)
        assert status == 200, answer
        assert answer["id"] == "req-1"
        assert answer["outputs"][0]["data"] == model.predict(rows).tolist()
        assert _post(f"{base}/v2/models/iris/versions/1/infer", request)[1] == answer
        status, error = _post(f"{base}/v2/models/nosuch/infer", request)
        assert status == 404
        assert "nosuch" in error["error"]
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    announced = json.loads(out)
    assert announced["url"] == base
    assert [(m["name"], m["version"], m["ref"]) for m in announced["models"]] == [
        ("iris", 1, "iris@production")
    ]


def test_an_unknown_model_fails_before_any_port_opens(project: Path, run_cli: Any) -> None:
    result = run_cli("serve", "iris@staging", "--project", project, "--port", "1")
    assert result.code == 1
    assert "staging" in result.err
    assert "production" in result.err  # it says which aliases exist


def test_manifest_for_a_cluster(project: Path, run_cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "isvc.yaml"
    result = run_cli("serve", "iris@production", "--manifest", path, "--project", project,
                     "--storage-uri", "s3://models/iris/1", "--predictor", "custom",
                     "--image", "example.com/iris:1", "--json")  # fmt: skip
    assert result.code == 0, result.err
    assert result.json()["manifest"] == str(path)
    assert result.json()["model"] == "iris:1"
    import yaml

    manifest = yaml.safe_load(path.read_text())
    assert manifest["kind"] == "InferenceService"
    (container,) = manifest["spec"]["predictor"]["containers"]  # see test_kserve_manifest.py
    assert container["args"][:2] == ["serve", "iris:1"]
    two = run_cli("serve", "iris", "iris:1", "--manifest", path, "--project", project)
    assert two.code == 1
    assert "one InferenceService" in two.err
