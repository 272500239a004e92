"""Issue 13, the protocol's items through the real server: hostile requests are 4xx JSON errors
and the keep-alive connection stays usable after each (uvicorn on loopback, one httpx client)."""

from __future__ import annotations

import gzip
import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest

GOOD = {
    "inputs": [
        {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
    ]
}


def _binary_bytes(claimed: int) -> tuple[bytes, dict[str, str]]:
    raw = struct.pack("<I", 1) + b"a"
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [claimed],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return head + raw, {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def _hostile() -> list[tuple[str, str, bytes, dict[str, str], int, str]]:
    json_type = {"Content-Type": "application/json"}
    bytes_body, bytes_headers = _binary_bytes(10**12)
    bomb = gzip.compress(b"[" + b" " * (80 * 1024 * 1024) + b"]")
    deep = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    infinity = json.dumps(GOOD).encode().replace(b"5.1", b"Infinity")
    big = json.dumps(GOOD).encode().replace(b"5.1", b"1e400")
    flag = json.dumps({**GOOD, "parameters": {"binary_data_output": "false"}}).encode()
    nested = json.dumps(
        {"inputs": [{"name": "x", "shape": [2, 13], "datatype": "FP64", "data": [[1.0, 2.0]] * 13}]}
    ).encode()
    zero = json.dumps(
        {"inputs": [{"name": "input-0", "shape": [0, 4], "datatype": "FP64", "data": []}]}
    ).encode()
    fp32 = json.dumps({"inputs": [{**GOOD["inputs"][0], "datatype": "FP32"}]}).encode()
    return [
        (
            "item1-bytes-1e12",
            "echo",
            bytes_body,
            bytes_headers,
            400,
            "1000000000000 BYTES elements",
        ),
        (
            "item2-gzip-bomb",
            "echo",
            bomb,
            {**json_type, "Content-Encoding": "gzip"},
            413,
            "decompresses",
        ),
        ("item4-deep-json", "iris", deep, json_type, 400, "256 levels"),
        ("item5-infinity", "iris", infinity, json_type, 400, "not valid JSON"),
        ("item5-1e400", "iris", big, json_type, 400, "not valid JSON"),
        ("item5-zero-rows", "iris", zero, json_type, 400, "no rows"),
        ("item6-fp32", "iris", fp32, json_type, 200, '"model_name":"iris"'),
        ("item7-nested-13x2", "echo", nested, json_type, 400, "does not have shape [2, 13]"),
        ("item7-flag-string", "iris", flag, json_type, 400, "must be true or false"),
    ]


HOSTILE = _hostile()


@pytest.mark.parametrize(
    ("model", "content", "headers", "status", "says"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_hostile_requests_are_4xx_and_the_connection_stays_usable(
    client: httpx.Client,
    model: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    says: str,
) -> None:
    response = client.post(f"/v2/models/{model}/infer", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert says in response.text
    if status >= 400:
        assert set(response.json()) == {"error"}
    again = client.post("/v2/models/iris/infer", json=GOOD)  # same keep-alive connection
    assert again.status_code == 200, again.text


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_item6_fp32_from_tritonclient_is_served_as_fp64(
    served: tuple[str, Any],
    iris: tuple[np.ndarray, np.ndarray],
    iris_models: list[Any],
    binary: bool,
) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    rows = iris[0][::9]
    client = httpclient.InferenceServerClient(url=served[0].removeprefix("http://"))
    try:
        tensor = httpclient.InferInput("input-0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows.astype(np.float32), binary_data=binary)
        result = client.infer("iris", [tensor])
    finally:
        client.close()
    expected = iris_models[1].predict(rows.astype(np.float32).astype(np.float64))
    assert result.as_numpy("predict").tolist() == expected.tolist()
