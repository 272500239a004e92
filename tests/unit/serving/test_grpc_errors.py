"""Item 12: the gRPC API's errors, limits, token and lifecycle, against the real server.

Every refused call carries the gRPC code of the REST status (400 INVALID_ARGUMENT, 401
UNAUTHENTICATED, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 500 INTERNAL) and the
REST API's error text.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
import grpc  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from cellpipe.errors import ServingError  # noqa: E402
from cellpipe.serving._oip_grpc import open_inference_grpc_pb2 as oip  # noqa: E402
from cellpipe.serving._oip_grpc import open_inference_grpc_pb2_grpc as oip_grpc  # noqa: E402
from cellpipe.serving.grpc import (  # noqa: E402
    GRPC_CODES,
    RunningGrpcServer,
    grpc_code_name,
    start_grpc_server,
)
from cellpipe.serving.table import ModelTable  # noqa: E402

# The same names the REST fixture `served` serves, so both APIs can be asked the same thing.
REST_SERVED = ["iris@production", "wine", "double", "echo", "stats", "broken", "nosig", "alcohol"]


def complex_output(x: np.ndarray) -> np.ndarray:
    return x.astype(np.complex128)


@pytest.fixture(scope="module")
def grpc_served(make_source: Callable[[], Any]) -> Iterator[RunningGrpcServer]:
    table = ModelTable.resolve(REST_SERVED, make_source())
    with start_grpc_server(table, host="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture
def stub(grpc_served: RunningGrpcServer) -> Iterator[Any]:
    with grpc.insecure_channel(grpc_served.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _refusal(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    return error.code().name, error.details()


def _fp64(model: str, values: list[float], shape: list[int], name: str = "input-0") -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=name, datatype="FP64", shape=shape)
    tensor.contents.fp64_contents.extend(values)
    return request


def test_item12_grpc_codes_of_rest_statuses() -> None:
    assert {s: grpc_code_name(s) for s in (400, 401, 404, 413, 500, 503)} == {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        404: "NOT_FOUND",
        413: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    }
    assert grpc_code_name(422) == "INVALID_ARGUMENT"
    assert grpc_code_name(502) == "INTERNAL"
    assert all(hasattr(grpc.StatusCode, name) for name in GRPC_CODES.values())


# (REST path, REST JSON body or None for GET, the same question as a gRPC call)
SAME_QUESTIONS: dict[str, tuple[str, dict[str, Any] | None, Callable[[Any], Any]]] = {
    "unknown model": (
        "/v2/models/nope/infer",
        {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1], "data": [1.0]}]},
        lambda stub: stub.ModelInfer(_fp64("nope", [1.0], [1])),
    ),
    "unknown model metadata": (
        "/v2/models/nope",
        None,
        lambda stub: stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope")),
    ),
    "unknown version": (
        "/v2/models/iris/versions/9",
        None,
        lambda stub: stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="iris", version="9")),
    ),
    "wrong input name": (
        "/v2/models/iris/infer",
        {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4.5]}]},
        lambda stub: stub.ModelInfer(_fp64("iris", [1, 2, 3, 4.5], [1, 4], name="x")),
    ),
    "wrong shape": (
        "/v2/models/iris/infer",
        {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3.5]}]},
        lambda stub: stub.ModelInfer(_fp64("iris", [1, 2, 3.5], [1, 3])),
    ),
    "model raises on the values": (
        "/v2/models/broken/infer",
        {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.5]}]},
        lambda stub: stub.ModelInfer(_fp64("broken", [1.5], [1], name="x")),
    ),
}


@pytest.mark.parametrize("case", list(SAME_QUESTIONS))
def test_item12_grpc_errors_match_rest(case: str, stub: Any, served: tuple[str, Any]) -> None:
    path, body, ask = SAME_QUESTIONS[case]
    with httpx.Client(base_url=served[0], timeout=30) as http:
        rest = http.get(path) if body is None else http.post(path, json=body)
    assert rest.status_code >= 400

    code, details = _refusal(lambda: ask(stub))

    assert code == grpc_code_name(rest.status_code)
    assert details == rest.json()["error"]


def test_item12_grpc_model_ready_of_unknown_model_is_not_found(stub: Any) -> None:
    code, details = _refusal(lambda: stub.ModelReady(service_pb2.ModelReadyRequest(name="nope")))
    assert code == "NOT_FOUND"
    assert "'nope'" in details


def test_item12_grpc_unservable_version_is_unavailable_and_not_ready(
    make_source: Callable[[], Any],
) -> None:
    source = make_source()
    source.add("odd", complex_output)
    source.add("odd", 42)  # an int: neither predict nor callable, so it cannot be served
    table = ModelTable.resolve(["odd:1"], source, all_versions=True)
    with (
        start_grpc_server(table, host="127.0.0.1", port=0) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        ready = stub.ModelReady(service_pb2.ModelReadyRequest(name="odd", version="2"))
        # Triton's proto has no ModelMetadataResponse.properties (the OIP's field 6): ours.
        oip_stub = oip_grpc.GRPCInferenceServiceStub(channel)
        metadata = oip_stub.ModelMetadata(oip.ModelMetadataRequest(name="odd", version="2"))
        request = _fp64("odd", [1.0], [1], name="x")
        request.model_version = "2"
        code, details = _refusal(lambda: stub.ModelInfer(request))
    assert ready.ready is False
    assert metadata.properties["ready"] == "false"
    assert "int" in metadata.properties["reason"]
    assert code == "UNAVAILABLE"
    assert details.startswith(metadata.properties["reason"])


def test_item12_grpc_output_that_cannot_be_sent_is_internal(
    make_source: Callable[[], Any],
) -> None:
    source = make_source()
    source.add("complex", complex_output)
    table = ModelTable.resolve(["complex"], source)
    with (
        start_grpc_server(table, host="127.0.0.1", port=0) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        code, details = _refusal(lambda: stub.ModelInfer(_fp64("complex", [1.0], [1], name="x")))
    assert code == "INTERNAL"
    assert "complex128" in details


def test_item12_grpc_unknown_output_is_invalid_argument(stub: Any) -> None:
    request = _fp64("iris", [1, 2, 3, 4.5], [1, 4])
    request.outputs.add(name="logits")
    code, details = _refusal(lambda: stub.ModelInfer(request))
    assert code == "INVALID_ARGUMENT"
    assert "unknown output 'logits'" in details


def _raw(model: str, *tensors: tuple[str, str, list[int]], raws: list[bytes]) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model, raw_input_contents=raws)
    for name, datatype, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


def _typed_in(datatype: str, shape: list[int], field: str, values: list[Any]) -> Any:
    request = service_pb2.ModelInferRequest(model_name="double")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


BAD_TENSORS: dict[str, tuple[Any, str]] = {
    "raw count": (
        _raw("double", ("x", "FP64", [1]), raws=[b"\0" * 8, b"\0" * 8]),
        "1 inputs and 2 raw_input_contents",
    ),
    "raw size": (_raw("double", ("x", "FP64", [2]), raws=[b"\0" * 8]), "needs 16 bytes"),
    "raw and contents": (
        _raw("double", ("x", "FP64", [1]), raws=[b"\0" * 8]),
        "uses raw_input_contents",
    ),
    "wrong contents field": (
        _typed_in("FP64", [2], "int64_contents", [1, 2]),
        "its contents are in int64_contents",
    ),
    "FP16 typed": (_typed_in("FP16", [0], "fp32_contents", []), "send it in raw_input_contents"),
    "count": (_typed_in("INT64", [2, 2], "int64_contents", [1, 2, 3]), "needs 4 elements"),
    "INT8 range": (_typed_in("INT8", [1], "int_contents", [300]), "out of range for INT8"),
    "negative shape": (_typed_in("INT64", [-1], "int64_contents", [1]), "non-negative"),
    "datatype": (_typed_in("FP128", [1], "fp64_contents", [1.0]), "unsupported datatype"),
    "huge BYTES claim": (
        _raw("echo", ("x", "BYTES", [10**12]), raws=[b"\x00\x00\x00\x00"]),
        "'x'",
    ),
    "no inputs": (service_pb2.ModelInferRequest(model_name="double"), "at least one input"),
    "output twice": (
        _typed_in("INT64", [1], "int64_contents", [1]),
        "an output is requested twice",
    ),
}
BAD_TENSORS["output twice"][0].outputs.add(name="output-0")
BAD_TENSORS["output twice"][0].outputs.add(name="output-0")
BAD_TENSORS["raw and contents"][0].inputs[0].contents.fp64_contents.append(1.0)


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_item12_grpc_bad_tensors_are_invalid_argument(case: str, stub: Any) -> None:
    request, words = BAD_TENSORS[case]
    code, details = _refusal(lambda: stub.ModelInfer(request))
    assert code == "INVALID_ARGUMENT"
    assert words in details


def test_item12_grpc_shape_claiming_too_much_is_resource_exhausted(stub: Any) -> None:
    request = _raw("echo", ("x", "BYTES", [10**7, 10**7]), raws=[b"\x00\x00\x00\x00"])
    code, details = _refusal(lambda: stub.ModelInfer(request))
    assert code == "RESOURCE_EXHAUSTED"
    assert "claims more than" in details


def test_item12_grpc_binary_data_output_must_be_a_bool(stub: Any) -> None:
    request = _fp64("double", [1.0], [1], name="x")
    request.parameters["binary_data_output"].string_param = "false"
    code, details = _refusal(lambda: stub.ModelInfer(request))
    assert code == "INVALID_ARGUMENT"
    assert "binary_data_output" in details


def test_item12_grpc_message_over_the_limit_is_resource_exhausted(
    make_source: Callable[[], Any],
) -> None:
    table = ModelTable.resolve(["double"], make_source())
    with start_grpc_server(table, host="127.0.0.1", port=0, max_message_bytes=4096) as server:
        client = grpcclient.InferenceServerClient(url=server.address)
        try:
            small = grpcclient.InferInput("x", [8], "FP64")
            small.set_data_from_numpy(np.arange(8, dtype=np.float64))
            big = grpcclient.InferInput("x", [1024], "FP64")
            big.set_data_from_numpy(np.arange(1024, dtype=np.float64))

            assert client.infer("double", [small]).as_numpy("output-0")[-1] == 14.0
            with pytest.raises(InferenceServerException) as caught:
                client.infer("double", [big])
        finally:
            client.close()
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_item12_grpc_bearer_token(make_source: Callable[[], Any]) -> None:
    table = ModelTable.resolve(["double"], make_source())
    tensor = grpcclient.InferInput("x", [1], "FP64")
    tensor.set_data_from_numpy(np.array([2.5]))
    with start_grpc_server(table, host="127.0.0.1", port=0, token="s3cret-token") as server:
        client = grpcclient.InferenceServerClient(url=server.address)
        try:
            assert client.is_server_live()  # the health probes stay open
            assert client.is_server_ready()
            refusals = []
            for headers in (
                None,
                {"authorization": "Bearer wrong"},
                {"authorization": "s3cret-token"},
            ):
                with pytest.raises(InferenceServerException) as caught:
                    client.infer("double", [tensor], headers=headers)
                refusals.append((caught.value.status(), caught.value.message()))
            with pytest.raises(InferenceServerException) as metadata:
                client.get_model_metadata("double")
            good = {"authorization": "Bearer s3cret-token"}
            result = client.infer("double", [tensor], headers=good)
            lower = client.infer(
                "double", [tensor], headers={"authorization": "bearer s3cret-token"}
            )
            assert client.get_model_metadata("double", headers=good).name == "double"
        finally:
            client.close()
    assert result.as_numpy("output-0").tolist() == [5.0]
    assert lower.as_numpy("output-0").tolist() == [5.0]
    assert metadata.value.status() == "StatusCode.UNAUTHENTICATED"
    for status, message in refusals:
        assert status == "StatusCode.UNAUTHENTICATED"
        assert "bearer token" in message
        assert "s3cret" not in message


def test_item12_grpc_port_in_use_names_the_port(make_source: Callable[[], Any]) -> None:
    table = ModelTable.resolve(["double"], make_source())
    with start_grpc_server(table, host="127.0.0.1", port=0) as first:
        taken = first.port
        with pytest.raises(ServingError, match=f"port {taken} is in use"):
            start_grpc_server(table, host="127.0.0.1", port=taken)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_item12_grpc_ipv6_address_is_bracketed(make_source: Callable[[], Any]) -> None:
    table = ModelTable.resolve(["double"], make_source())
    with start_grpc_server(table, host="::1", port=0) as server:
        assert server.address == f"[::1]:{server.port}"
        client = grpcclient.InferenceServerClient(url=server.address)
        try:
            assert client.is_server_live()
        finally:
            client.close()


def _server_threads(before: set[threading.Thread]) -> list[str]:
    # The pool's workers and grpcio's polling thread and grace timer; not the client
    # channel's own threads (tritonclient's channel may still be winding down).
    return sorted(
        t.name
        for t in threading.enumerate()
        if t not in before
        and (
            t.name.startswith("cellpipe-grpc")
            or t.name.endswith(("(_serve)", "(cancel_all_calls_after_grace)"))
        )
    )


def test_item12_grpc_stop_leaves_no_thread(make_source: Callable[[], Any]) -> None:
    table = ModelTable.resolve(["double"], make_source())
    before = set(threading.enumerate())
    server = start_grpc_server(table, host="127.0.0.1", port=0, workers=3)
    client = grpcclient.InferenceServerClient(url=server.address)
    tensor = grpcclient.InferInput("x", [1], "FP64")
    tensor.set_data_from_numpy(np.array([1.0]))
    for _ in range(5):  # so the pool's worker threads exist
        client.infer("double", [tensor])
    client.close()
    running = _server_threads(before)
    assert any(n.startswith("cellpipe-grpc") for n in running), running
    assert any(n.endswith("(_serve)") for n in running), running

    server.stop(grace=1.0)

    assert _server_threads(before) == []


def test_item12_grpc_without_grpcio_names_the_extra(
    make_source: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = ModelTable.resolve(["double"], make_source())
    monkeypatch.setitem(sys.modules, "grpc", None)
    with pytest.raises(ServingError, match=r"cellpipe\[grpc\]"):
        start_grpc_server(table, host="127.0.0.1", port=0)
