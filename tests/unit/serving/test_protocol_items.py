"""Issue 13, the protocol's items (1, 2, 4, 5, 6, 7): hostile and odd requests, in process.

`infer` and `run_model` are called directly on real models (the fixtures' scikit-learn models
and callables), so each rule is checked at the layer that owns it; test_protocol_server.py
sends the same requests to the real server.
"""

from __future__ import annotations

import gzip
import json
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from cellpipe.serving import codec
from cellpipe.serving.adapters import adapt
from cellpipe.serving.protocol import (
    DEFAULT_MAX_BODY,
    HEADER_LENGTH,
    ServedModel,
    infer,
    run_model,
)
from cellpipe.serving.tensors import RequestError, safe_cast

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def models(make_source: Callable[[], Any]) -> Callable[[str], ServedModel]:
    source = make_source()

    def get(ref: str) -> ServedModel:
        version = source.resolve(ref)
        return ServedModel(version=version, adapter=adapt(source.load(version), version))

    return get


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def iris_input(**change: Any) -> dict[str, Any]:
    return {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW, **change}


def refused(call: Callable[[], Any], status: int = 400) -> str:
    with pytest.raises(RequestError) as caught:
        call()
    assert caught.value.status == status, caught.value.message
    return caught.value.message


def answer(content: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(content)
    return result


# -- item 1: claimed sizes are checked against the bytes received, before allocating -------------


def binary_request(datatype: str, shape: list[int], raw: bytes) -> tuple[bytes, str]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return head + raw, str(len(head))


@pytest.mark.parametrize("claimed", [10**8, 10**12, 2**40])
def test_item1_binary_bytes_claiming_a_huge_shape_is_400_without_allocating(
    models: Callable[[str], ServedModel], claimed: int
) -> None:
    request, size = binary_request("BYTES", [claimed], struct.pack("<I", 1) + b"a")
    tracemalloc.start()
    try:
        message = refused(lambda: infer(models("echo"), request, header_length=size))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"{claimed} BYTES elements need at least" in message
    assert "'x'" in message
    assert peak < 1024 * 1024  # the claim allocated nothing (an object array: 8 bytes each)


def test_item1_fixed_size_types_need_exactly_their_bytes(
    models: Callable[[str], ServedModel],
) -> None:
    request, size = binary_request("FP64", [10**9], b"\0" * 8)
    message = refused(lambda: infer(models("echo"), request, header_length=size))
    assert "needs 8000000000 bytes, binary_data_size is 8" in message


@pytest.mark.parametrize(
    ("shape", "status", "says"),
    [
        ([2**62, 2**62], 413, "claims more than"),
        ([10**19], 413, "claims more than"),
        ([1] * 33, 400, "33 dimensions"),
        ([True, 4], 400, "non-negative integers"),
    ],
)
def test_item1_absurd_shapes_are_refused_naming_the_input(
    models: Callable[[str], ServedModel], shape: list[Any], status: int, says: str
) -> None:
    request = body({"name": "wide", "shape": shape, "datatype": "FP64", "data": [1.0]})
    message = refused(lambda: infer(models("echo"), request), status)
    assert says in message
    assert "'wide'" in message


def test_item1_json_data_is_counted_before_the_shape_allocates(
    models: Callable[[str], ServedModel],
) -> None:
    request = body({"name": "x", "shape": [10**11], "datatype": "BYTES", "data": ["a"]})
    message = refused(lambda: infer(models("echo"), request))
    assert "needs 100000000000 elements, the data has 1" in message


def test_item1_binary_bytes_still_decode(models: Callable[[str], ServedModel]) -> None:
    raw = b"".join(struct.pack("<I", len(t)) + t for t in (b"ab", b"", "é".encode()))
    request, size = binary_request("BYTES", [3], raw)
    content, _ = infer(models("echo"), request, header_length=size)
    assert answer(content)["outputs"][0]["data"] == ["ab", "", "é"]


def test_binary_inputs_are_writable_and_copied_only_from_read_only_bodies() -> None:
    from cellpipe.serving.tensors import decode_binary

    raw = struct.pack("<2d", 1.0, 2.0)
    from_bytes = decode_binary("x", "FP64", (2,), memoryview(raw))
    from_bytes[0] = 5.0  # a model may write to its input
    assert raw == struct.pack("<2d", 1.0, 2.0)
    buffer = bytearray(raw)
    shared = decode_binary("x", "FP64", (2,), memoryview(buffer))
    shared[1] = 7.0
    assert buffer == bytearray(struct.pack("<2d", 1.0, 7.0))  # no copy was made


# -- item 2: compressed bodies are inflated with a bound -----------------------------------------


def test_item2_gzip_bomb_is_413_after_at_most_max_body_bytes(
    models: Callable[[str], ServedModel],
) -> None:
    bomb = gzip.compress(b"[" + b" " * (50 * 1024 * 1024) + b"]")
    assert len(bomb) < 100 * 1024
    tracemalloc.start()
    try:
        message = refused(
            lambda: infer(models("echo"), bomb, content_encoding="gzip", max_body=1024 * 1024),
            413,
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "decompresses to more than 1048576 bytes" in message
    assert peak < 8 * 1024 * 1024  # bounded by max_body, not by the 50 MiB it inflates to


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "GZIP", " x-gzip "])
def test_item2_compressed_bodies_within_the_limit_work(
    models: Callable[[str], ServedModel], encoding: str
) -> None:
    plain = body(iris_input())
    packed = zlib.compress(plain) if "deflate" in encoding else gzip.compress(plain)
    content, _ = infer(models("iris"), packed, content_encoding=encoding)
    assert answer(content)["outputs"][0]["name"] == "predict"


def test_item2_gzip_members_and_bad_data(models: Callable[[str], ServedModel]) -> None:
    plain = body(iris_input())
    two = gzip.compress(plain[:10]) + gzip.compress(plain[10:])
    assert answer(infer(models("iris"), two, content_encoding="gzip")[0])["outputs"]
    cut = gzip.compress(plain)[:-12]
    assert "cut short" in refused(lambda: infer(models("iris"), cut, content_encoding="gzip"))
    assert "not valid gzip" in refused(
        lambda: infer(models("iris"), b"not gzip", content_encoding="gzip")
    )
    refused(lambda: infer(models("iris"), plain, content_encoding="br"), 415)


def test_item2_default_limit_is_64_mib() -> None:
    assert DEFAULT_MAX_BODY == 64 * 1024 * 1024


# -- item 4 (the codec's half): deep nesting is a 400, not a RecursionError -----------------------


@pytest.mark.parametrize("depth", [257, 1000, 5000, 100_000])
def test_item4_json_nested_5000_deep_is_400(
    models: Callable[[str], ServedModel], depth: int
) -> None:
    deep = b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
    message = refused(lambda: infer(models("iris"), deep))
    assert "more than 256 levels" in message or "not valid JSON" in message


@pytest.fixture(params=["orjson", "json"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The codec with orjson, and with the standard library it falls back to."""
    if request.param == "json":
        monkeypatch.setattr(codec, "_loads", codec._std_loads)
        monkeypatch.setattr(codec, "_dumps", codec._std_dumps)
    else:
        pytest.importorskip("orjson")
    return str(request.param)


@pytest.mark.parametrize(
    "text",
    [
        b"NaN",
        b"[Infinity]",
        b"[-Infinity]",
        b"[1e400]",
        b"[-1e400]",
        b"1" + b"0" * 5000,
        b"[" * 5000 + b"]" * 5000,
        b"[" * 257 + b"]" * 257,
        b'"\xff"',  # not UTF-8
    ],
)
def test_item5_codec_rules_hold_with_either_implementation(
    implementation: str, text: bytes
) -> None:
    with pytest.raises(RequestError) as caught:
        codec.loads(text)
    assert caught.value.status == 400
    parsed = codec.loads(b'{"a": [1, 2.5, "\\u00e9", true, null]}')
    assert parsed == {"a": [1, 2.5, "\u00e9", True, None]}
    assert codec.dumps({"a": [1, 2.5, "é"]}) == '{"a":[1,2.5,"é"]}'.encode()


def test_item4_codec_depth_limit_is_exact() -> None:
    assert codec.loads(b"[" * 256 + b"]" * 256) is not None
    with pytest.raises(RequestError, match="more than 256 levels"):
        codec.loads(b"[" * 257 + b"]" * 257)
    # Many brackets side by side are not depth.
    assert len(codec.loads(b"[" + b"[1]," * 2000 + b"[1]]")) == 2001


# -- item 5: client data is a 400, server faults a 500 --------------------------------------------


@pytest.mark.parametrize(
    "literal", [b"Infinity", b"-Infinity", b"NaN", b"1e400", b"-1e400", b"1" + b"0" * 5000]
)
def test_item5_infinity_in_json_is_400(
    models: Callable[[str], ServedModel], literal: bytes
) -> None:
    request = body(iris_input(data=[0.0, 0.0, 0.0, 0.0])).replace(b"0.0]", literal + b"]")
    assert literal in request
    refused(lambda: infer(models("iris"), request))


def test_item5_shape_zero_rows_is_400_with_the_reason(
    models: Callable[[str], ServedModel],
) -> None:
    request = body(iris_input(shape=[0, 4], data=[]))
    message = refused(lambda: infer(models("iris"), request))
    assert "no rows" in message


def test_item5_shape_zero_rows_reaches_a_callable_as_an_empty_array(
    models: Callable[[str], ServedModel],
) -> None:
    request = body({"name": "x", "shape": [0, 3], "datatype": "FP64", "data": []})
    output = answer(infer(models("double"), request)[0])["outputs"][0]
    assert (output["shape"], output["data"]) == ([0, 3], [])


def test_item5_model_raising_on_the_values_is_400(models: Callable[[str], ServedModel]) -> None:
    request = body({"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]})
    message = refused(lambda: infer(models("broken"), request))
    assert "cannot take these inputs: ValueError: the model is broken on purpose" in message


def test_item5_a_real_server_fault_is_500(models: Callable[[str], ServedModel]) -> None:
    def leaks(x: np.ndarray) -> np.ndarray:
        raise MemoryError("no room")

    faulty = ServedModel(
        version=models("double").version, adapter=adapt(leaks, models("double").version)
    )
    message = refused(lambda: run_model(faulty, {"x": ("FP64", np.ones(1))}, []), 500)
    assert "failed: MemoryError: no room" in message


def test_item5_outputs_json_cannot_carry_are_500(models: Callable[[str], ServedModel]) -> None:
    request, size = binary_request("FP64", [2], struct.pack("<2d", 1.0, float("inf")))
    message = refused(lambda: infer(models("echo"), request, header_length=size), 500)
    assert "output 'output-0' holds NaN or infinity" in message
    head = json.loads(request[: int(size)])
    head["parameters"] = {"binary_data_output": True}
    again = json.dumps(head).encode()
    content, headers = infer(
        models("echo"), again + request[int(size) :], header_length=str(len(again))
    )
    assert np.frombuffer(content[int(headers[HEADER_LENGTH]) :])[1] == float("inf")


# -- item 6: safe casts, and refusals that name the real reason -----------------------------------


def test_item6_fp32_input_is_accepted_as_fp64(models: Callable[[str], ServedModel]) -> None:
    as_fp64 = answer(infer(models("iris"), body(iris_input()))[0])
    as_fp32 = answer(infer(models("iris"), body(iris_input(datatype="FP32")))[0])
    assert as_fp32["outputs"] == as_fp64["outputs"]


def test_item6_fp32_matrix_for_a_model_fitted_on_columns(
    models: Callable[[str], ServedModel],
) -> None:
    request = body(
        {"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [13.0, 2.0, 2.4]}
    )
    assert answer(infer(models("wine"), request)[0])["outputs"][0]["shape"] == [1]


def test_item6_int32_input_is_accepted_as_int64(models: Callable[[str], ServedModel]) -> None:
    request = body(
        {"name": "x", "shape": [1], "datatype": "INT32", "data": [3]},
        {"name": "y", "shape": [1], "datatype": "INT32", "data": [4]},
    )
    assert answer(infer(models("stats"), request)[0])["outputs"][0]["data"] == [7]


@pytest.mark.parametrize(
    ("source", "target", "values", "ok"),
    [
        ("<f4", "FP64", [1.5], True),
        ("<f2", "FP32", [1.5], True),
        ("<i4", "INT64", [-3], True),
        ("<u1", "INT16", [200], True),
        ("<i4", "FP64", [-(2**31)], True),
        ("<i8", "FP64", [2**53], True),
        ("<i8", "FP64", [2**53 + 1], False),  # would round
        ("<f8", "FP32", [1.0], False),  # narrowing
        ("<f8", "INT64", [1.0], False),  # float to integer
        ("<u8", "INT64", [1], False),
        ("?", "INT64", [True], False),
    ],
)
def test_item6_safe_casts_never_change_a_value(
    source: str, target: str, values: list[Any], ok: bool
) -> None:
    array = np.array(values, dtype=source)
    cast = safe_cast(array, target)
    assert (cast is not None) == ok
    if cast is not None:
        assert cast.tolist() == array.tolist()


def test_item6_refusals_name_the_real_reason(models: Callable[[str], ServedModel]) -> None:
    iris = models("iris")
    as_int8 = infer(iris, body(iris_input(datatype="INT8", data=[5, 3, 1, 0])))  # safe: FP64
    assert answer(as_int8[0])["outputs"][0]["shape"] == [1]
    narrowing = refused(
        lambda: infer(
            models("stats"),
            body(
                {"name": "x", "shape": [1], "datatype": "FP64", "data": [1.5]},
                {"name": "y", "shape": [1], "datatype": "INT64", "data": [1]},
            ),
        )
    )
    assert "input 'x' is FP64; the model takes INT64" in narrowing
    shape = refused(lambda: infer(iris, body(iris_input(shape=[2, 2]))))
    assert "input 'input-0' has shape [2, 2]; the model takes [-1, 4]" in shape
    name = refused(lambda: infer(iris, body(iris_input(name="features"))))
    assert "unknown input 'features'; the model takes input-0 (FP64 [-1, 4])" in name


# -- item 7: data contradicting its shape; flags are JSON booleans ---------------------------------


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([[float(i), float(i)] for i in range(13)], "at depth 0 a list of 2 was expected"),
        ([list(range(13)), [*list(range(12)), [1]]], "deeper than shape"),
        (
            [list(range(13)), list(range(12))],
            "at depth 1 a list of 13 was expected, got a list of 12",
        ),
        ([list(range(13)), 5], "at depth 1"),
        ([[list(range(13))], [list(range(13))]], "at depth 1 a list of 13"),
    ],
)
def test_item7_nested_data_contradicting_the_shape_is_400(
    models: Callable[[str], ServedModel], data: list[Any], says: str
) -> None:
    request = body({"name": "x", "shape": [2, 13], "datatype": "FP64", "data": data})
    message = refused(lambda: infer(models("echo"), request))
    assert says in message, message


def test_item7_nesting_that_matches_the_shape_is_the_same_as_flat(
    models: Callable[[str], ServedModel],
) -> None:
    values = [[[float(i + 2 * j + 6 * k) for i in range(2)] for j in range(3)] for k in range(2)]
    nested = body({"name": "x", "shape": [2, 3, 2], "datatype": "FP64", "data": values})
    flat = body(
        {"name": "x", "shape": [2, 3, 2], "datatype": "FP64", "data": np.ravel(values).tolist()}
    )
    assert infer(models("echo"), nested)[0] == infer(models("echo"), flat)[0]


@pytest.mark.parametrize("value", ["false", "yes", 1, 0, None])
def test_item7_binary_data_output_must_be_a_json_boolean(
    models: Callable[[str], ServedModel], value: Any
) -> None:
    request = body(iris_input(), parameters={"binary_data_output": value})
    if value is None:  # JSON null: not given
        assert infer(models("iris"), request)[1]["content-type"] == "application/json"
        return
    message = refused(lambda: infer(models("iris"), request))
    assert "'binary_data_output' must be true or false" in message


@pytest.mark.parametrize("value", ["yes", "false", 1])
def test_item7_binary_data_must_be_a_json_boolean(
    models: Callable[[str], ServedModel], value: Any
) -> None:
    request = body(
        iris_input(), outputs=[{"name": "predict", "parameters": {"binary_data": value}}]
    )
    message = refused(lambda: infer(models("iris"), request))
    assert "'binary_data' must be true or false" in message


def test_item7_boolean_flags_still_select_binary(models: Callable[[str], ServedModel]) -> None:
    request = body(iris_input(), parameters={"binary_data_output": True})
    content, headers = infer(models("iris"), request)
    size = int(headers[HEADER_LENGTH])
    output = answer(content[:size])["outputs"][0]
    assert output["parameters"]["binary_data_size"] == len(content) - size == 8


# -- run_model: the transport-free core gRPC shares ------------------------------------------------


def test_run_model_returns_the_wanted_outputs_in_order(
    models: Callable[[str], ServedModel],
) -> None:
    inputs = {"input-0": ("FP32", np.array([ROW], dtype=np.float32))}
    produced = run_model(models("iris"), inputs, ["predict_proba", "predict"])
    assert list(produced) == ["predict_proba", "predict"]
    assert list(run_model(models("iris"), inputs, [])) == ["predict"]
    assert "unknown output 'nope'" in refused(lambda: run_model(models("iris"), inputs, ["nope"]))
    assert "requested twice" in refused(
        lambda: run_model(models("iris"), inputs, ["predict", "predict"])
    )
