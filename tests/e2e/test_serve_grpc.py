"""Item 12 end to end: `cellpipe serve --grpc-port` (the real command, in its own process)
answers tritonclient's gRPC client, in one process and with worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.e2e

TOKEN = "e2e-grpc-token"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    from cellpipe.api import open_project
    from cellpipe.config import Settings
    from cellpipe.registry.registry import ModelRegistry

    folder = tmp_path_factory.mktemp("grpc") / "iris"
    folder.mkdir()
    x, y = load_iris(return_X_y=True)
    model = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x, y)
    with open_project(Settings.for_notebook(folder / "iris.py")) as store:
        ModelRegistry(store.metadata, store.artifacts).register(
            model, "iris", input_example=x, alias="production"
        )
    return folder, model


def _announcement(process: subprocess.Popen[bytes], deadline: float, log: Path) -> dict[str, Any]:
    """The JSON document `cellpipe serve --json` prints once it listens (over several lines).

    Read from the pipe's descriptor, unbuffered: a buffered reader may hold lines already
    read from the pipe that `select` cannot see.
    """
    assert process.stdout is not None
    fd = process.stdout.fileno()
    text = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.5):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                text += chunk
                if text.rstrip().endswith(b"}"):
                    with contextlib.suppress(ValueError):
                        return dict(json.loads(text))
            elif process.poll() is not None:
                break
    process.kill()
    process.communicate(timeout=60)
    pytest.fail(
        f"cellpipe serve announced no address (exit {process.returncode}):\n"
        + log.read_text(errors="replace")
    )


@contextmanager
def _serve(folder: Path, *options: str) -> Iterator[dict[str, Any]]:
    command = [sys.executable, "-c", "from cellpipe.cli.main import entry; entry()",
               "serve", "iris@production", "--port", "0", "--grpc-port", "0", "--json",
               *options]  # fmt: skip
    env = {**os.environ, "CELLPIPE_SERVE_TOKEN": TOKEN}
    log = folder / f"serve-{time.monotonic_ns()}.log"  # a file: an unread pipe could fill up
    with log.open("wb") as errors:
        server = subprocess.Popen(
            command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=errors, bufsize=0
        )
    try:
        yield _announcement(server, time.monotonic() + 120, log)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_item12_cellpipe_serve_grpc_port_answers_tritonclient(
    project: tuple[Path, Any], workers: str
) -> None:
    folder, model = project
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    headers = {"authorization": f"Bearer {TOKEN}"}
    with _serve(folder, "--workers", workers) as announced:
        address = announced["grpc"]
        assert address.startswith("127.0.0.1:")
        assert not address.endswith(":0")
        client = grpcclient.InferenceServerClient(url=address)
        try:
            deadline = time.monotonic() + 60  # a worker process may still be starting
            while True:
                try:
                    if client.is_server_live():
                        break
                except InferenceServerException:
                    pass
                assert time.monotonic() < deadline, "the gRPC server never answered"
                time.sleep(0.2)
            metadata = client.get_model_metadata("iris", headers=headers, as_json=True)
            tensor = grpcclient.InferInput("input-0", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            result = client.infer("iris", [tensor], headers=headers, request_id="e2e")
            with pytest.raises(InferenceServerException) as refused:
                client.infer("iris", [tensor])  # no token
        finally:
            client.close()

    assert metadata["name"] == "iris"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": ["-1", "4"]}]
    assert result.get_response().id == "e2e"
    assert result.get_response().model_version == "1"
    expected = model.predict(rows.astype(np.float64)).tolist()
    assert result.as_numpy(metadata["outputs"][0]["name"]).tolist() == expected
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
