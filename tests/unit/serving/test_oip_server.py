"""The real server (uvicorn on loopback) against the Open Inference Protocol v2 REST spec."""

from __future__ import annotations

import gzip
import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest

import cellpipe

HEADER = "Inference-Header-Content-Length"


def infer_json(rows: np.ndarray, name: str = "input-0", **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.ravel().tolist(),
            }
        ],
        **extra,
    }


def binary_body(document: dict[str, Any], *raws: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(document).encode()
    return head + b"".join(raws), {
        HEADER: str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def split_response(response: httpx.Response) -> tuple[dict[str, Any], dict[str, bytes]]:
    size = int(response.headers[HEADER])
    document = json.loads(response.content[:size])
    rest = response.content[size:]
    raws: dict[str, bytes] = {}
    for output in document["outputs"]:
        n = output.get("parameters", {}).get("binary_data_size")
        if n is not None:
            raws[output["name"]], rest = rest[:n], rest[n:]
    assert rest == b""
    return document, raws


def test_health(client: httpx.Client) -> None:
    live = client.get("/v2/health/live")
    ready = client.get("/v2/health/ready")

    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


@pytest.mark.parametrize("path", ["/v2", "/v2/"])
def test_server_metadata(client: httpx.Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response.json() == {
        "name": "cellpipe",
        "version": cellpipe.__version__,
        "extensions": ["binary_tensor_data"],
    }


@pytest.mark.parametrize("path", ["/v2/models/iris", "/v2/models/iris/versions/2"])
def test_model_metadata_comes_from_the_signature(client: httpx.Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response.json() == {
        "name": "iris",
        "versions": ["2"],
        "platform": "sklearn_joblib",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }


def test_metadata_without_a_signature(client: httpx.Client) -> None:
    sklearn_meta = client.get("/v2/models/nosig").json()
    callable_meta = client.get("/v2/models/double").json()

    assert sklearn_meta["inputs"] == []
    assert sklearn_meta["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ]
    assert callable_meta == {
        "name": "double",
        "versions": ["1"],
        "platform": "python_cloudpickle",
        "inputs": [],
        "outputs": [],
    }


@pytest.mark.parametrize("path", ["/v2/models/iris/ready", "/v2/models/iris/versions/2/ready"])
def test_model_ready(client: httpx.Client, path: str) -> None:
    response = client.get(path)

    assert (response.status_code, response.json()) == (200, {"name": "iris", "ready": True})


def test_json_infer_equals_the_models_own_predict(
    client: httpx.Client, iris: tuple[np.ndarray, np.ndarray], iris_models: list[Any]
) -> None:
    rows = iris[0][::7]

    response = client.post("/v2/models/iris/infer", json=infer_json(rows, id="req-42"))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["model_name"] == "iris"
    assert body["model_version"] == "2"
    assert body["id"] == "req-42"
    [output] = body["outputs"]
    assert output["name"] == "predict"
    assert output["datatype"] == "INT64"
    assert output["shape"] == [len(rows)]
    assert output["data"] == iris_models[1].predict(rows).tolist()


def test_nested_data_is_the_same_as_flat(
    client: httpx.Client, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = iris[0][::11]
    flat = infer_json(rows)
    nested = infer_json(rows)
    nested["inputs"][0]["data"] = rows.tolist()

    a = client.post("/v2/models/iris/infer", json=flat).json()
    b = client.post("/v2/models/iris/infer", json=nested).json()

    assert a == b


def test_requested_outputs_in_the_requested_order(
    client: httpx.Client, iris: tuple[np.ndarray, np.ndarray], iris_models: list[Any]
) -> None:
    rows = iris[0][::9]
    request = infer_json(rows, outputs=[{"name": "predict_proba"}, {"name": "predict"}])

    body = client.post("/v2/models/iris/infer", json=request).json()

    assert [o["name"] for o in body["outputs"]] == ["predict_proba", "predict"]
    proba = body["outputs"][0]
    assert proba["datatype"] == "FP64"
    assert proba["shape"] == [len(rows), 3]
    expected = iris_models[1].predict_proba(rows)
    np.testing.assert_array_equal(np.array(proba["data"]).reshape(proba["shape"]), expected)
    assert "id" not in body


def test_item8_only_the_served_version_is_exposed(
    served: tuple[str, Any], client: httpx.Client, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    # iris@production is version 2; version 1 exists but was never asked for. (Every
    # version with --all-versions: tests/unit/serving/test_table_versions.py.)
    rows = iris[0][:3]

    served_version = client.post("/v2/models/iris/versions/2/infer", json=infer_json(rows))
    other = client.post("/v2/models/iris/versions/1/infer", json=infer_json(rows))
    other_ready = client.get("/v2/models/iris/versions/1/ready")

    assert served_version.json()["model_version"] == "2"
    assert other.status_code == other_ready.status_code == 404
    assert "version 1 of model 'iris' is not served here" in other.json()["error"]
    assert "--all-versions" in other.json()["error"]
    assert "iris:1" not in served[1].loads


def test_several_inputs_become_the_columns_the_model_was_fitted_on(
    client: httpx.Client, wine: Any, wine_model: Any
) -> None:
    frame = wine[0].iloc[::5]
    request = {
        "inputs": [
            {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()}
            for c in reversed(frame.columns)  # order in the request does not matter
        ]
    }

    response = client.post("/v2/models/wine/infer", json=request)

    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == wine_model.predict(frame).tolist()


def test_one_matrix_for_a_model_fitted_on_columns_as_kserve_sends_it(
    client: httpx.Client, wine: Any, wine_model: Any
) -> None:
    """KServe's scikit-learn runtime takes one [N, columns] tensor: that request works too."""
    frame = wine[0].iloc[::5]
    rows = frame.to_numpy()
    response = client.post("/v2/models/wine/infer", json=infer_json(rows))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == wine_model.predict(frame).tolist()
    narrow = client.post("/v2/models/wine/infer", json=infer_json(rows[:, :2]))
    assert narrow.status_code == 400  # not every column: says how many it takes
    assert "has 2 columns; the model takes 3" in narrow.json()["error"]


def test_one_column_model_with_the_registry_output_names(
    client: httpx.Client, wine: Any, alcohol_model: Any
) -> None:
    frame = wine[0][["alcohol"]].iloc[::9]
    request = {
        "inputs": [
            {
                "name": "alcohol",
                "shape": [len(frame)],
                "datatype": "FP64",
                "data": frame["alcohol"].tolist(),
            }
        ],
    }
    both = {**request, "outputs": [{"name": "output-0"}, {"name": "predict_proba"}]}

    default = client.post("/v2/models/alcohol/infer", json=request).json()
    body = client.post("/v2/models/alcohol/infer", json=both).json()

    assert [o["name"] for o in default["outputs"]] == ["output-0"]
    assert default["outputs"][0]["data"] == alcohol_model.predict(frame).tolist()
    assert body["outputs"][0] == default["outputs"][0]
    np.testing.assert_array_equal(
        np.array(body["outputs"][1]["data"]).reshape(len(frame), 3),
        alcohol_model.predict_proba(frame),
    )


def test_callables_with_several_named_outputs(client: httpx.Client) -> None:
    request = {
        "inputs": [
            {"name": "x", "shape": [3], "datatype": "INT64", "data": [1, 5, 9]},
            {"name": "y", "shape": [3], "datatype": "INT64", "data": [2, 6, 1]},
        ],
        "outputs": [{"name": "label"}],
    }

    everything = client.post("/v2/models/stats/infer", json={"inputs": request["inputs"]}).json()
    label_only = client.post("/v2/models/stats/infer", json=request).json()

    assert everything["outputs"] == [
        {"name": "total", "datatype": "INT64", "shape": [3], "data": [3, 11, 10]},
        {"name": "label", "datatype": "BYTES", "shape": [3], "data": ["small", "big", "small"]},
    ]
    assert label_only["outputs"] == everything["outputs"][1:]


def test_a_plain_callable(client: httpx.Client) -> None:
    request = {
        "inputs": [
            {"name": "anything", "shape": [2, 2], "datatype": "FP32", "data": [1, 2.5, 3, 4]}
        ]
    }

    body = client.post("/v2/models/double/infer", json=request).json()

    assert body["outputs"] == [
        {"name": "output-0", "datatype": "FP32", "shape": [2, 2], "data": [2.0, 5.0, 6.0, 8.0]}
    ]


ECHO_CASES = {
    "BOOL": [True, False, True, True],
    "UINT8": [0, 1, 200, 255],
    "UINT16": [0, 1, 65535, 7],
    "UINT32": [0, 1, 2**32 - 1, 7],
    "UINT64": [0, 1, 2**64 - 1, 7],
    "INT8": [-128, 0, 127, 1],
    "INT16": [-32768, 0, 32767, 1],
    "INT32": [-(2**31), 0, 2**31 - 1, 1],
    "INT64": [-(2**63), 0, 2**63 - 1, 1],
    "FP16": [0.5, -1.0, 65504.0, 0.25],
    "FP32": [0.5, -1.25, 3.0, 1e-3],
    "FP64": [0.1, -1e300, 2.5, 1 / 3],
    "BYTES": ["a", "héllo", "", "xyz"],
}


@pytest.mark.parametrize("datatype", list(ECHO_CASES))
def test_every_datatype_round_trips_as_json(client: httpx.Client, datatype: str) -> None:
    data = ECHO_CASES[datatype]
    request = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": datatype, "data": data}]}

    response = client.post("/v2/models/echo/infer", json=request)

    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output["datatype"] == datatype
    assert output["shape"] == [2, 2]
    if datatype == "FP32":
        assert output["data"] == np.array(data, dtype=np.float32).tolist()
    else:
        assert output["data"] == data


def _to_binary(datatype: str, data: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in data)
    from cellpipe.serving.tensors import NUMPY_DTYPES

    return np.array(data, dtype=NUMPY_DTYPES[datatype]).tobytes()


@pytest.mark.parametrize("datatype", list(ECHO_CASES))
def test_every_datatype_round_trips_as_binary(client: httpx.Client, datatype: str) -> None:
    raw = _to_binary(datatype, ECHO_CASES[datatype])
    document = {
        "inputs": [
            {
                "name": "x",
                "shape": [4],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": "output-0", "parameters": {"binary_data": True}}],
    }
    body, headers = binary_body(document, raw)

    response = client.post("/v2/models/echo/infer", content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    answer, raws = split_response(response)
    [output] = answer["outputs"]
    assert output["datatype"] == datatype
    assert output["shape"] == [4]
    assert "data" not in output
    assert raws["output-0"] == raw


def test_binary_input_and_outputs_against_predict(
    client: httpx.Client, iris: tuple[np.ndarray, np.ndarray], iris_models: list[Any]
) -> None:
    rows = iris[0][::3]
    raw = rows.astype("<f8").tobytes()
    document = {
        "id": "bin-1",
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [
            {"name": "predict", "parameters": {"binary_data": True}},
            {"name": "predict_proba", "parameters": {"binary_data": False}},
        ],
    }
    body, headers = binary_body(document, raw)

    response = client.post("/v2/models/iris/infer", content=body, headers=headers)

    assert response.status_code == 200, response.text
    answer, raws = split_response(response)
    assert answer["id"] == "bin-1"
    predict, proba = answer["outputs"]
    assert predict["parameters"] == {"binary_data_size": 8 * len(rows)}
    np.testing.assert_array_equal(
        np.frombuffer(raws["predict"], dtype="<i8"), iris_models[1].predict(rows)
    )
    np.testing.assert_array_equal(
        np.array(proba["data"]).reshape(proba["shape"]), iris_models[1].predict_proba(rows)
    )


def test_binary_data_output_applies_to_every_output(
    client: httpx.Client, iris: tuple[np.ndarray, np.ndarray], iris_models: list[Any]
) -> None:
    rows = iris[0][:5]
    request = infer_json(rows, parameters={"binary_data_output": True})

    response = client.post("/v2/models/iris/infer", json=request)

    answer, raws = split_response(response)
    assert [o["name"] for o in answer["outputs"]] == ["predict"]
    np.testing.assert_array_equal(
        np.frombuffer(raws["predict"], dtype="<i8"), iris_models[1].predict(rows)
    )


def test_a_gzip_compressed_request(
    client: httpx.Client, iris: tuple[np.ndarray, np.ndarray], iris_models: list[Any]
) -> None:
    rows = iris[0][:4]
    body = gzip.compress(json.dumps(infer_json(rows)).encode())

    response = client.post(
        "/v2/models/iris/infer",
        content=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == iris_models[1].predict(rows).tolist()


GOOD = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}


def _with(**change: Any) -> dict[str, Any]:
    return {"inputs": [{**GOOD, **change}]}


ERRORS = [
    ("unknown-model", "POST", "/v2/models/nope/infer", _with(), 404, "model 'nope' is not served"),
    ("unknown-model-meta", "GET", "/v2/models/nope", None, 404, "model 'nope' is not served"),
    ("unknown-version", "POST", "/v2/models/iris/versions/9/infer", _with(), 404, "version 9 of"),
    ("bad-version", "GET", "/v2/models/iris/versions/abc", None, 404, "no version 'abc'"),
    ("unknown-version-ready", "GET", "/v2/models/iris/versions/9/ready", None, 404, "version 9"),
    ("unknown-route", "GET", "/v3/anything", None, 404, "no such endpoint"),
    ("wrong-method", "GET", "/v2/models/iris/infer", None, 405, "Method Not Allowed"),
    ("not-json", "POST", "/v2/models/iris/infer", b"{not json", 400, "not valid JSON"),
    ("not-an-object", "POST", "/v2/models/iris/infer", [1, 2], 400, "JSON object"),
    ("no-inputs", "POST", "/v2/models/iris/infer", {"inputs": []}, 400, "non-empty 'inputs'"),
    (
        "bad-datatype",
        "POST",
        "/v2/models/iris/infer",
        _with(datatype="FP128"),
        400,
        "unsupported datatype 'FP128'",
    ),
    (
        "count-vs-shape",
        "POST",
        "/v2/models/iris/infer",
        _with(shape=[2, 4]),
        400,
        r"shape \[2, 4\] needs 8 elements, the data has 4",
    ),
    (
        "negative-shape",
        "POST",
        "/v2/models/iris/infer",
        _with(shape=[-1, 4]),
        400,
        "non-negative integers",
    ),
    (
        "datatype-vs-signature",
        "POST",
        "/v2/models/iris/infer",
        _with(datatype="BOOL", data=[True, False, True, False]),
        400,
        "input 'input-0' is BOOL; the model takes FP64",
    ),
    (
        "shape-vs-signature",
        "POST",
        "/v2/models/iris/infer",
        _with(shape=[2, 2]),
        400,
        r"has shape \[2, 2\]; the model takes \[-1, 4\]",
    ),
    (
        "rank-below-signature",
        "POST",
        "/v2/models/iris/infer",
        _with(shape=[4]),
        400,
        r"has shape \[4\]; the model takes \[-1, 4\]",
    ),
    (
        "rank-above-signature",
        "POST",
        "/v2/models/iris/infer",
        _with(shape=[1, 1, 4]),
        400,
        r"has shape \[1, 1, 4\]; the model takes \[-1, 4\]",
    ),
    (
        "rank-3-without-signature",
        "POST",
        "/v2/models/nosig/infer",
        {"inputs": [{"name": "x", "shape": [1, 1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
        400,
        r"the model takes a 2-D tensor \[rows, 4\], the request has shape \[1, 1, 4\]",
    ),
    (
        "unknown-input",
        "POST",
        "/v2/models/iris/infer",
        _with(name="features"),
        400,
        "unknown input 'features'",
    ),
    (
        "missing-input",
        "POST",
        "/v2/models/wine/infer",
        {"inputs": [{"name": "alcohol", "shape": [1], "datatype": "FP64", "data": [13.0]}]},
        400,
        "missing input 'malic_acid'",
    ),
    (
        "unknown-output",
        "POST",
        "/v2/models/iris/infer",
        {**_with(), "outputs": [{"name": "decision"}]},
        400,
        "unknown output 'decision'",
    ),
    (
        "float-for-int",
        "POST",
        "/v2/models/echo/infer",
        {"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2.5]}]},
        400,
        "2.5 is not a valid INT32 element",
    ),
    (
        "out-of-range",
        "POST",
        "/v2/models/echo/infer",
        {"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [256]}]},
        400,
        "out of range for UINT8",
    ),
    (
        "number-for-bool",
        "POST",
        "/v2/models/echo/infer",
        {"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}]},
        400,
        "not a valid BOOL",
    ),
    (
        "wrong-feature-count",
        "POST",
        "/v2/models/nosig/infer",
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
        400,
        "expects 4 features per row, the request has 3",
    ),
    (
        "non-string-id",
        "POST",
        "/v2/models/iris/infer",
        {**_with(), "id": 7},
        400,
        "'id' must be a string",
    ),
    (
        "model-raised",
        "POST",
        "/v2/models/broken/infer",
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
        400,  # issue 13 item 5: a model refusing the client's values is the client's error
        "model broken:1 cannot take these inputs: ValueError: the model is broken on purpose",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "message"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_errors_are_json_with_the_right_status(
    client: httpx.Client, method: str, path: str, payload: Any, status: int, message: str
) -> None:
    if isinstance(payload, bytes):
        response = client.request(method, path, content=payload)
    elif payload is None:
        response = client.request(method, path)
    else:
        response = client.request(method, path, json=payload)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    import re

    assert re.search(message, body["error"]), body["error"]


def _binary_case(size_param: int, extra: bytes = b"", header: str | None = None) -> Any:
    raw = np.zeros(4).tobytes()
    document = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [1, 4],
                "datatype": "FP64",
                "parameters": {"binary_data_size": size_param},
            }
        ]
    }
    body, headers = binary_body(document, raw + extra)
    if header is not None:
        headers[HEADER] = header
    return body, headers


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (_binary_case(16), r"needs 32 bytes, binary_data_size is 16"),
        (_binary_case(64), "goes past the end of the body"),
        (_binary_case(32, extra=b"xx"), "2 bytes of binary data no input claims"),
        (_binary_case(32, header="99999"), "must be a number of bytes"),
        (_binary_case(32, header="ten"), "must be a number of bytes"),
    ],
    ids=["size-vs-shape", "past-the-end", "unclaimed-bytes", "header-too-long", "header-nan"],
)
def test_binary_errors(client: httpx.Client, case: Any, message: str) -> None:
    body, headers = case

    response = client.post("/v2/models/iris/infer", content=body, headers=headers)

    assert response.status_code == 400, response.text
    import re

    assert re.search(message, response.json()["error"]), response.json()["error"]
