"""`cellpipe image --model` and the custom KServe predictor, end to end (issue 13).

A run's model is registered twice (versions 1 and 2); the image context of ``iris:2`` holds a
registry exported with just that version, and the real `cellpipe serve` started on it (a
subprocess with ``--project`` on the export, as the container runs it) answers with
``model_version`` "2". `cellpipe serve --manifest` names the same image.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import cellpipe
from cellpipe import api
from kserve_openapi import problems

pytestmark = pytest.mark.e2e

NOTEBOOK = """\
# %% tags=["imports"]
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

# %% tags=["step:train"]
x, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=500).fit(x, y)
"""

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def _call(url: str, document: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if document is None else json.dumps(document).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@contextlib.contextmanager
def _serving(ref: str, project: Path, cwd: Path) -> Iterator[str]:
    """Run the real `cellpipe serve REF --project PROJECT` until ready; yield its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    entry = "from cellpipe.cli.main import entry; entry()"
    server = subprocess.Popen(
        [sys.executable, "-c", entry, "serve", ref, "--port", str(port), "--project", project],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert server.returncode == 0


def _ready(url: str) -> bool:
    try:
        return _call(f"{url}/v2/health/ready")[0] == 200
    except OSError:
        return False


@pytest.fixture
def project(tmp_path: Path, run_cli: Any) -> Path:
    """A project whose registry has iris:1 (staging) and iris:2 (production), from one run."""
    folder = tmp_path / "iris"
    folder.mkdir()
    (folder / "iris.py").write_text(NOTEBOOK)
    ran = run_cli("run", folder / "iris.py", "--json")
    assert ran.code == 0, ran.err
    run_id = json.loads(ran.out.splitlines()[-1])["run_id"]
    for alias in ("staging", "production"):
        api.register_run_output(run_id, "train", "model", "iris", alias=alias, project=folder)
    return folder


def test_item13_the_exported_registry_serves_the_same_version_number(
    project: Path, run_cli: Any, tmp_path: Path
) -> None:
    context = tmp_path / "ctx"
    result = run_cli("image", "--model", "iris@production", "-o", context,
                     "--project", project, "--json")  # fmt: skip
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["model"] == "iris:2"
    assert summary["built"] is False
    assert summary["tag"].startswith("cellpipe-model-iris:")
    assert sorted(p.name for p in context.iterdir()) == [
        "Dockerfile", "cellpipe-model.json", "project", "requirements.txt"
    ]  # fmt: skip
    import sklearn

    requirements = (context / "requirements.txt").read_text().splitlines()
    assert f"scikit-learn=={sklearn.__version__}" in requirements
    assert f"cellpipe[serve]=={cellpipe.__version__}" in requirements
    assert (
        'CMD ["serve", "iris:2", "--host", "0.0.0.0", "--port", "8080"'
        in (context / "Dockerfile").read_text()
    )

    with _serving("iris:2", context / "project", cwd=tmp_path) as url:
        status, metadata = _call(f"{url}/v2/models/iris")
        assert status == 200, metadata
        assert metadata["versions"] == ["2"]
        request = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64",
                               "data": [v for row in ROWS for v in row]}]}  # fmt: skip
        status, answer = _call(f"{url}/v2/models/iris/infer", request)
        assert status == 200, answer
        assert answer["model_version"] == "2"
        model = cellpipe.load_model("iris:2", project=project)
        assert answer["outputs"][0]["data"] == model.predict(ROWS).tolist()

    again = run_cli("image", "--model", "iris:2", "-o", context, "--project", project, "--json")
    assert again.code == 0, again.err
    assert again.json()["tag"] == summary["tag"]  # the same content, the same tag

    path = tmp_path / "isvc.yaml"
    written = run_cli("serve", "iris:2", "--manifest", path, "--project", project, "--json")
    assert written.code == 0, written.err
    document = yaml.safe_load(path.read_text())
    assert problems(document) == []
    if written.json()["predictor"] == "custom":  # scikit-learn here is not one KServe ships
        (container,) = document["spec"]["predictor"]["containers"]
        assert container["image"] == summary["tag"]
        assert container["args"][:2] == ["serve", "iris:2"]
    else:
        assert document["spec"]["predictor"]["model"]["modelFormat"]["name"] == "sklearn"


def test_item13_the_context_folder_never_mixes_registries(
    project: Path, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    record = tmp_path / "build-args.txt"
    docker = tools / "docker"
    docker.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}/usr/bin:/bin")
    context = tmp_path / "ctx"
    first = run_cli("image", "--model", "iris:1", "-o", context, "--project", project, "--build")
    assert first.code == 0, first.err
    assert "cellpipe-model-iris:" in first.out
    tag = first.out.split(" for image ")[1].split()[0]
    assert record.read_text().split() == ["build", "-t", tag, str(context)]

    other = run_cli("image", "--model", "iris:2", "-o", context, "--project", project)

    assert other.code != 0
    assert "already holds a registry" in other.err
    assert "-o" in other.err


def test_image_takes_a_notebook_or_a_model(project: Path, run_cli: Any) -> None:
    neither = run_cli("image", "--project", project)
    both = run_cli("image", project / "iris.py", "--model", "iris", "--project", project)

    for result in (neither, both):
        assert result.code != 0
        assert "a NOTEBOOK or --model REF" in result.err


def test_item13_manifest_options_reach_the_file(
    project: Path, run_cli: Any, tmp_path: Path
) -> None:
    path = tmp_path / "isvc.yaml"
    result = run_cli("serve", "iris@production", "--manifest", path, "--project", project,
                     "--name", "x" * 54, "--image", "example.com/iris:1")  # fmt: skip
    assert result.code != 0
    assert "at most 53" in result.err
    assert "--name" in result.err

    result = run_cli("serve", "iris@production", "--manifest", path, "--project", project,
                     "--predictor", "custom", "--image", "example.com/iris:1",
                     "--namespace", "ml", "--json")  # fmt: skip
    assert result.code == 0, result.err
    assert result.json()["predictor"] == "custom"
    document = yaml.safe_load(path.read_text())
    assert problems(document) == []
    assert document["metadata"]["namespace"] == "ml"
    assert document["spec"]["predictor"]["containers"][0]["image"] == "example.com/iris:1"
