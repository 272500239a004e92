"""Every difference between `cellpipe serve` and KServe's scikit-learn runtime, one test each.

docs/kserve-differences.md is the table; each row names its test here. Each test sends the
same request to the real cellpipe server (always) and, when a KServe venv is available, to
KServe's `ModelServer` running KServe's scikit-learn predict path (`kserve_peer.py`, started
with that venv's python, 127.0.0.1 only), and asserts what each answers. The KServe venv:
`CELLPIPE_KSERVE_PYTHON` (a python with kserve, scikit-learn and joblib), else the peer-bench
venv at ``/work/peerbench/kserve/bin/python`` when it exists; without one, only cellpipe's
side runs (KServe's side is then the source reading recorded in the table).

Both servers serve the same object: a DecisionTreeClassifier fitted on three wine columns
of a DataFrame (so it has ``feature_names_in_``), registered with its input example.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

COLUMNS = ("alcohol", "malic_acid", "ash")
ROW = [13.2, 1.78, 2.14]
PEER = Path(__file__).with_name("kserve_peer.py")


def _kserve_python() -> str | None:
    named = os.environ.get("CELLPIPE_KSERVE_PYTHON")
    if named:
        return named
    default = Path("/work/peerbench/kserve/bin/python")
    return str(default) if default.exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    import joblib
    from sklearn.datasets import load_wine
    from sklearn.tree import DecisionTreeClassifier

    frame = load_wine(as_frame=True).frame
    columns = frame[list(COLUMNS)]
    model = DecisionTreeClassifier(max_depth=4, random_state=0).fit(columns, frame["target"])
    path = tmp_path_factory.mktemp("kserve") / "model.joblib"
    joblib.dump(model, path)
    return model, columns, path


@pytest.fixture(scope="module")
def cellpipe_url(tree: tuple[Any, Any, Path]) -> Iterator[str]:
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.serving import start_server
    from cellpipe.storage.artifacts import MemoryArtifactStore
    from cellpipe.storage.metadata import MemoryMetadataStore

    model, columns, _ = tree
    registry = ModelRegistry(MemoryMetadataStore(), MemoryArtifactStore())
    registry.register(model, "wine", input_example=columns.head(2))
    with start_server(["wine"], registry) as running:
        yield running.url


@pytest.fixture(scope="module")
def kserve_url(tree: tuple[Any, Any, Path]) -> Iterator[str | None]:
    python = _kserve_python()
    if python is None:
        yield None
        return
    port = _free_port()
    env = {**os.environ, "CELLPIPE_PEER_PORT": str(port), "CELLPIPE_PEER_MODEL": str(tree[2])}
    process = subprocess.Popen(
        [python, str(PEER)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=url, timeout=5) as client:
            while True:
                if process.poll() is not None:
                    pytest.fail(f"KServe did not start: {process.stderr.read()[-2000:]!r}")  # type: ignore[union-attr]
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("KServe did not answer /v2/health/ready within 120 s")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
        if process.stderr is not None:
            process.stderr.close()


class Both:
    """Send one request to cellpipe and, when running, KServe."""

    def __init__(self, cellpipe: str, kserve: str | None) -> None:
        self.urls = {"cellpipe": cellpipe, "kserve": kserve}

    def post(
        self, document: Any, *, raw: bytes | None = None, **headers: str
    ) -> dict[str, httpx.Response]:
        content = raw if raw is not None else json.dumps(document).encode()
        return self._each("POST", "/v2/models/wine/infer", content, headers)

    def get(self, path: str) -> dict[str, httpx.Response]:
        return self._each("GET", path, None, {})

    def _each(
        self, method: str, path: str, content: bytes | None, headers: dict[str, str]
    ) -> dict[str, httpx.Response]:
        answers = {}
        for server, url in self.urls.items():
            if url is None:
                continue
            with httpx.Client(base_url=url, timeout=30) as client:
                answers[server] = client.request(
                    method,
                    path,
                    content=content,
                    headers={"content-type": "application/json", **headers},
                )
        return answers


@pytest.fixture
def both(cellpipe_url: str, kserve_url: str | None) -> Both:
    return Both(cellpipe_url, kserve_url)


def matrix(**change: Any) -> dict[str, Any]:
    return {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": ROW, **change}


def columns(datatype: str = "FP64") -> list[dict[str, Any]]:
    return [
        {"name": name, "shape": [1], "datatype": datatype, "data": [value]}
        for name, value in zip(COLUMNS, ROW, strict=True)
    ]


def expected_class(tree: tuple[Any, Any, Path]) -> int:
    import pandas as pd

    return int(tree[0].predict(pd.DataFrame([ROW], columns=list(COLUMNS)))[0])


def check(answers: dict[str, httpx.Response], cellpipe: int, kserve: int) -> None:
    assert answers["cellpipe"].status_code == cellpipe, answers["cellpipe"].text
    if "kserve" in answers:
        assert answers["kserve"].status_code == kserve, answers["kserve"].text


# -- agreements the table relies on -----------------------------------------------------------


def test_item14_one_matrix_tensor_works_on_both(both: Both, tree: Any) -> None:
    answers = both.post({"inputs": [matrix()]})
    check(answers, 200, 200)
    for response in answers.values():
        [output] = response.json()["outputs"]
        assert (output["name"], output["data"]) == ("output-0", [expected_class(tree)])


def test_item14_per_column_inputs_with_content_type_pd_work_on_both(both: Both, tree: Any) -> None:
    answers = both.post({"inputs": columns(), "parameters": {"content_type": "pd"}})
    check(answers, 200, 200)
    for response in answers.values():
        assert response.json()["outputs"][0]["data"] == [expected_class(tree)]


def test_item6_fp32_is_accepted_by_both(both: Both, tree: Any) -> None:
    answers = both.post({"inputs": [matrix(datatype="FP32")]})
    check(answers, 200, 200)
    assert answers["cellpipe"].json()["outputs"][0]["data"] == [expected_class(tree)]


# -- differences ------------------------------------------------------------------------------


def test_diff_metadata_advertises_the_signature_and_content_type_pd(both: Both) -> None:
    answers = both.get("/v2/models/wine")
    check(answers, 200, 200)
    ours = answers["cellpipe"].json()
    assert [spec["name"] for spec in ours["inputs"]] == list(COLUMNS)
    assert ours["parameters"] == {"content_type": "pd"}
    assert (ours["versions"], ours["platform"]) == (["1"], "sklearn_joblib")
    if "kserve" in answers:
        theirs = answers["kserve"].json()
        assert (theirs["inputs"], theirs["outputs"], theirs["versions"]) == ([], [], None)


def test_diff_per_column_inputs_without_content_type(both: Both, tree: Any) -> None:
    answers = both.post({"inputs": columns()})
    check(answers, 200, 500)  # KServe passes only the first input (1-D) to predict
    assert answers["cellpipe"].json()["outputs"][0]["data"] == [expected_class(tree)]


def test_diff_model_version_and_id_in_the_response(both: Both) -> None:
    answers = both.post({"inputs": [matrix()]})
    check(answers, 200, 200)
    ours = answers["cellpipe"].json()
    assert ours["model_version"] == "1"
    assert "id" not in ours
    assert "parameters" not in ours
    if "kserve" in answers:
        theirs = answers["kserve"].json()
        assert theirs["model_version"] is None
        assert isinstance(theirs["id"], str)  # a generated uuid
        assert theirs["parameters"] is None


def test_diff_predict_proba_is_an_output_a_request_can_name(both: Both) -> None:
    answers = both.post({"inputs": [matrix()], "outputs": [{"name": "predict_proba"}]})
    check(answers, 200, 400)  # KServe: PREDICT_PROBA=true, server-wide, instead
    [output] = answers["cellpipe"].json()["outputs"]
    assert (output["name"], output["shape"]) == ("predict_proba", [1, 3])


def test_diff_inputs_are_checked_before_the_model(both: Both) -> None:
    width = both.post({"inputs": [matrix(shape=[1, 2], data=ROW[:2])]})
    check(width, 400, 500)
    assert "2 columns; the model takes 3" in width["cellpipe"].json()["error"]
    text = both.post({"inputs": [matrix(datatype="BYTES", data=["a", "b", "c"])]})
    check(text, 400, 500)
    assert "is BYTES; the model takes FP64" in text["cellpipe"].json()["error"]


def test_diff_a_lossy_cast_is_refused(both: Both) -> None:
    answers = both.post({"inputs": [matrix(datatype="INT64", data=[2**53 + 1, 1, 2])]})
    check(answers, 400, 200)  # KServe: the model rounds 2**53 + 1 silently
    assert "cannot be converted to it without changing values" in answers["cellpipe"].text


def test_diff_zero_rows(both: Both) -> None:
    answers = both.post({"inputs": [matrix(shape=[0, 3], data=[])]})
    check(answers, 400, 500)
    assert "no rows" in answers["cellpipe"].json()["error"]


@pytest.mark.parametrize(
    ("literal", "kserve"),
    [(b"Infinity", 500), (b"1e400", 500), (b"NaN", 200)],  # a tree takes NaN as missing
)
def test_diff_non_json_numbers(both: Both, literal: bytes, kserve: int) -> None:
    raw = json.dumps({"inputs": [matrix()]}).encode().replace(b"13.2", literal)
    answers = both.post(None, raw=raw)
    check(answers, 400, kserve)  # KServe parses them (Python's json); cellpipe: not JSON


def test_diff_nested_data_contradicting_the_shape(both: Both) -> None:
    transposed = both.post({"inputs": [matrix(data=[[v] for v in ROW])]})
    check(transposed, 400, 200)  # KServe reshapes [[a], [b], [c]] to [1, 3] silently
    ragged = both.post({"inputs": [matrix(shape=[2, 3], data=[ROW, ROW[:2]])]})
    check(ragged, 400, 500)


def test_diff_binary_data_output_as_a_string(both: Both) -> None:
    answers = both.post({"inputs": [matrix()], "parameters": {"binary_data_output": "false"}})
    check(answers, 400, 200)
    assert "must be true or false" in answers["cellpipe"].json()["error"]
    if "kserve" in answers:  # the string "false" is truthy: binary output
        assert "binary_data_size" in answers["kserve"].content.decode("latin-1")


def test_diff_a_model_refusing_the_values(both: Both) -> None:
    values = struct.pack("<3d", float("inf"), 1.0, 2.0)  # binary data can carry infinity
    head = json.dumps(
        {"inputs": [{**matrix(data=None), "parameters": {"binary_data_size": len(values)}}]}
    ).encode()
    head = head.replace(b', "data": null', b"")
    answers = both.post(
        None,
        raw=head + values,
        **{
            "inference-header-content-length": str(len(head)),
            "content-type": "application/octet-stream",
        },
    )
    check(answers, 400, 500)
    assert "cannot take these inputs: ValueError" in answers["cellpipe"].json()["error"]


def test_diff_gzip_request_bodies(both: Both, tree: Any) -> None:
    raw = gzip.compress(json.dumps({"inputs": [matrix()]}).encode())
    answers = both.post(None, raw=raw, **{"content-encoding": "gzip"})
    check(answers, 200, 400)
    assert answers["cellpipe"].json()["outputs"][0]["data"] == [expected_class(tree)]


def test_diff_no_v1_protocol(both: Both) -> None:
    answers = {
        server: httpx.post(f"{url}/v1/models/wine:predict", json={"instances": [ROW]}, timeout=30)
        for server, url in both.urls.items()
        if url is not None
    }
    check(answers, 404, 200)
