"""A standard client, tritonclient's HTTP client, against the real server unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def triton(served: tuple[str, Any]) -> Any:
    url = served[0].removeprefix("http://")
    client = httpclient.InferenceServerClient(url=url, network_timeout=30)
    yield client
    client.close()


def test_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("iris")
    assert triton.is_model_ready("iris", "2")
    assert not triton.is_model_ready("iris", "1")  # served: iris@production, version 2 only
    assert not triton.is_model_ready("nope")
    assert triton.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    metadata = triton.get_model_metadata("iris")
    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["2"]
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert triton.get_model_metadata("iris", "2")["outputs"][0]["name"] == "predict"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer(
    triton: Any, iris: tuple[np.ndarray, np.ndarray], iris_models: list[Any], binary: bool
) -> None:
    rows = iris[0][::4]
    tensor = httpclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("predict", binary_data=binary),
        httpclient.InferRequestedOutput("predict_proba", binary_data=binary),
    ]

    result = triton.infer("iris", [tensor], outputs=outputs, request_id="t-1")

    assert result.get_response()["id"] == "t-1"
    assert result.get_response()["model_version"] == "2"
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_models[1].predict(rows))
    np.testing.assert_array_equal(
        result.as_numpy("predict_proba"), iris_models[1].predict_proba(rows)
    )


def test_infer_without_outputs_a_version_and_strings(
    triton: Any, iris: tuple[np.ndarray, np.ndarray], iris_models: list[Any]
) -> None:
    rows = iris[0][1::5]
    tensor = httpclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    words = np.array([b"a", "héllo".encode(), b""], dtype=np.object_)
    text = httpclient.InferInput("x", [3], "BYTES")
    text.set_data_from_numpy(words)

    result = triton.infer("iris", [tensor], model_version="2")  # all outputs, binary
    echoed = triton.infer("echo", [text])

    np.testing.assert_array_equal(result.as_numpy("predict"), iris_models[1].predict(rows))
    assert echoed.as_numpy("output-0").tolist() == [b"a", "héllo".encode(), b""]


def test_errors_reach_the_client(triton: Any) -> None:
    tensor = httpclient.InferInput("input-0", [1, 4], "BOOL")
    tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.bool_))

    with pytest.raises(InferenceServerException, match="not served"):
        triton.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="is BOOL; the model takes FP64"):
        triton.infer("iris", [tensor])
