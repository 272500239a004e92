"""Item 12: the OIP gRPC API, driven by standard clients: tritonclient's gRPC client (raw
tensors, as Triton's clients send them) and Triton's generated stub (typed contents)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
import grpc  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402

from cellpipe.serving.grpc import RunningGrpcServer, start_grpc_server  # noqa: E402
from cellpipe.serving.table import ModelTable  # noqa: E402

SERVED = ["iris@production", "double", "echo", "stats"]


@pytest.fixture(scope="module")
def grpc_served(make_source: Callable[[], Any]) -> Iterator[RunningGrpcServer]:
    table = ModelTable.resolve(SERVED, make_source(), all_versions=True)
    with start_grpc_server(table, host="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture
def triton(grpc_served: RunningGrpcServer) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(url=grpc_served.address)
    yield client
    client.close()


@pytest.fixture
def stub(grpc_served: RunningGrpcServer) -> Iterator[Any]:
    with grpc.insecure_channel(grpc_served.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_item12_grpc_health_and_metadata(triton: Any, grpc_served: RunningGrpcServer) -> None:
    assert grpc_served.port > 0
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("iris")
    assert triton.is_model_ready("iris", "2")
    server = triton.get_server_metadata(as_json=True)
    assert server["name"] == "cellpipe"
    assert server["version"]
    metadata = triton.get_model_metadata("iris", as_json=True)
    assert metadata["name"] == "iris"
    assert metadata["platform"] == "sklearn_joblib"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": ["-1", "4"]}]
    assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"]
    assert metadata["versions"] == ["1", "2"]


def test_item12_grpc_infer_fp64_raw_inputs_and_outputs(
    triton: Any, iris: tuple[np.ndarray, np.ndarray], iris_models: list[Any]
) -> None:
    rows = iris[0][::7]
    tensor = grpcclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    outputs = [
        grpcclient.InferRequestedOutput("predict"),
        grpcclient.InferRequestedOutput("predict_proba"),
    ]

    result = triton.infer("iris", [tensor], outputs=outputs, request_id="g-1")

    response = result.get_response()
    assert response.id == "g-1"
    assert response.model_name == "iris"
    assert response.model_version == "2"
    assert len(response.raw_output_contents) == 2  # binary outputs, as tritonclient reads them
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_models[1].predict(rows))
    np.testing.assert_array_equal(
        result.as_numpy("predict_proba"), iris_models[1].predict_proba(rows)
    )


def test_item12_grpc_fp32_is_cast_to_fp64(
    triton: Any, iris: tuple[np.ndarray, np.ndarray], iris_models: list[Any]
) -> None:
    rows = iris[0][3::11].astype(np.float32)
    tensor = grpcclient.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)

    result = triton.infer("iris", [tensor], model_version="1")

    assert result.get_response().model_version == "1"
    expected = iris_models[0].predict(rows.astype(np.float64))
    np.testing.assert_array_equal(result.as_numpy("predict"), expected)


def test_item12_grpc_int64_inputs_and_bytes_outputs(triton: Any) -> None:
    x = grpcclient.InferInput("x", [3], "INT64")
    x.set_data_from_numpy(np.array([1, 5, 20], dtype=np.int64))
    y = grpcclient.InferInput("y", [3], "INT64")
    y.set_data_from_numpy(np.array([2, 8, 1], dtype=np.int64))

    result = triton.infer("stats", [x, y])

    np.testing.assert_array_equal(result.as_numpy("total"), [3, 13, 21])
    assert result.as_numpy("label").tolist() == [b"small", b"big", b"big"]


def test_item12_grpc_bytes_inputs(triton: Any) -> None:
    words = np.array([b"a", "héllo".encode(), b"", b"\xff\xfe"], dtype=np.object_)
    text = grpcclient.InferInput("x", [4], "BYTES")
    text.set_data_from_numpy(words)

    result = triton.infer("echo", [text])

    assert result.as_numpy("output-0").tolist() == [b"a", "héllo".encode(), b"", b"\xff\xfe"]


def _typed_request(model: str, **fields: Any) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model, **fields)
    return request


def test_item12_grpc_typed_contents_answer_typed_contents(
    stub: Any, iris: tuple[np.ndarray, np.ndarray], iris_models: list[Any]
) -> None:
    rows = iris[0][5:8]
    request = _typed_request("iris", id="typed")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    tensor.contents.fp64_contents.extend(rows.reshape(-1).tolist())
    request.outputs.add(name="predict")
    request.outputs.add(name="predict_proba")

    response = stub.ModelInfer(request)

    assert response.id == "typed"
    assert not response.raw_output_contents
    predict, proba = response.outputs
    assert (predict.name, predict.datatype, list(predict.shape)) == ("predict", "INT64", [3])
    assert list(predict.contents.int64_contents) == iris_models[1].predict(rows).tolist()
    assert list(proba.shape) == [3, 3]
    np.testing.assert_allclose(
        np.array(proba.contents.fp64_contents).reshape(3, 3), iris_models[1].predict_proba(rows)
    )


def test_item12_grpc_typed_bytes_and_int_contents(stub: Any) -> None:
    request = _typed_request("echo")
    tensor = request.inputs.add(name="x", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([b"one", "twö".encode()])
    small = _typed_request("double")
    ints = small.inputs.add(name="x", datatype="INT32", shape=[2, 2])
    ints.contents.int_contents.extend([1, 2, 3, -4])

    echoed = stub.ModelInfer(request)
    doubled = stub.ModelInfer(small)

    assert list(echoed.outputs[0].contents.bytes_contents) == [b"one", "twö".encode()]
    assert doubled.outputs[0].datatype == "INT32"
    assert list(doubled.outputs[0].shape) == [2, 2]
    assert list(doubled.outputs[0].contents.int_contents) == [2, 4, 6, -8]


def test_item12_grpc_binary_data_output_parameter_asks_for_raw_outputs(stub: Any) -> None:
    request = _typed_request("double")
    tensor = request.inputs.add(name="x", datatype="FP64", shape=[3])
    tensor.contents.fp64_contents.extend([0.5, 1.5, -2.0])
    request.parameters["binary_data_output"].bool_param = True

    response = stub.ModelInfer(request)

    (raw,) = response.raw_output_contents
    assert np.frombuffer(raw, dtype="<f8").tolist() == [1.0, 3.0, -4.0]
    assert not response.outputs[0].HasField("contents")


def test_item12_grpc_and_triton_messages_coexist_in_one_process() -> None:
    # tritonclient registers inference.* in protobuf's default pool; ours live in a private
    # one, so importing both (as this module does) must work and stay wire-compatible.
    from cellpipe.serving._oip_grpc import open_inference_grpc_pb2 as ours

    request = ours.ModelInferRequest(model_name="m", raw_input_contents=[b"\x01"])
    request.inputs.add(name="a", datatype="UINT8", shape=[1])
    theirs = service_pb2.ModelInferRequest.FromString(request.SerializeToString())
    assert theirs.model_name == "m"
    assert list(theirs.inputs[0].shape) == [1]
    assert theirs.raw_input_contents == [b"\x01"]


def test_item12_grpc_metrics_count_calls_with_protocol_grpc(
    make_source: Callable[[], Any],
) -> None:
    from cellpipe.serving.metrics import Metrics

    metrics = Metrics.create()
    table = ModelTable.resolve(["double"], make_source())
    good = grpcclient.InferInput("x", [2], "FP64")
    good.set_data_from_numpy(np.array([1.0, 2.0]))
    bad = grpcclient.InferInput("x", [2], "FP64")
    bad.set_data_from_numpy(np.array([1.0, 2.0]))
    bad.set_shape([3])
    with start_grpc_server(table, host="127.0.0.1", port=0, metrics=metrics) as server:
        client = grpcclient.InferenceServerClient(url=server.address)
        try:
            for _ in range(3):
                client.infer("double", [good])
            for model in ("double", "no-such-model-" + "x" * 20):
                with pytest.raises(grpcclient.InferenceServerException):
                    client.infer(model, [bad])
        finally:
            client.close()

    text = metrics.render()[0].decode()
    labels = 'model="double",protocol="grpc",status="{}",version="1"'
    assert f"cellpipe_requests_total{{{labels.format(200)}}} 3.0" in text
    assert f"cellpipe_requests_total{{{labels.format(400)}}} 1.0" in text
    assert 'model="",protocol="grpc",status="404",version=""} 1.0' in text
    assert "no-such-model" not in text  # a client's name never becomes a label
    assert 'cellpipe_requests_in_flight{model="double",protocol="grpc",version="1"} 0.0' in text
