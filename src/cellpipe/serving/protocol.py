"""One inference request of the Open Inference Protocol v2, from request bytes to response bytes.

Owns: `ServedModel` (a loaded model version and its adapter), `infer` (parse the JSON body or
the binary tensor data extension's body, check the inputs against the model's signature, call
the model, encode the outputs as JSON or binary data) and the metadata documents of a model.

The binary tensor data extension (``binary_tensor_data``, as Triton and tritonclient use it):
the request's ``Inference-Header-Content-Length`` header gives the size of the JSON part; the
raw tensors follow it in input order, each input that has one saying its size with the
``binary_data_size`` parameter. An output is returned as binary data when its requested
output has ``"binary_data": true``, or, when it does not say, when the request's parameters
have ``"binary_data_output": true``; the response then carries the header too and the output's
``binary_data_size`` parameter. Request bodies compressed with ``Content-Encoding: gzip`` or
``deflate`` are accepted.

Invariants: a malformed request raises `RequestError` (400; 404 for an unknown model or
version) and never reaches the model; an exception raised by the model becomes a
`RequestError` with status 500 naming the model version and the exception.

Must not depend on: the web framework, the runner, kfp or notebooks.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellpipe.errors import ServingError
from cellpipe.registry.model import ModelVersion, TensorSpec
from cellpipe.serving.adapters import ModelAdapter, platform_of
from cellpipe.serving.tensors import (
    EncodedOutput,
    RequestError,
    check_header,
    decode_binary,
    decode_json,
    encode_binary,
    encode_json,
    shape_matches,
)

__all__ = ["HEADER_LENGTH", "ServedModel", "infer", "model_metadata"]

logger = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The binary tensor data extension's header: the byte size of the JSON part of a body."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedModel:
    """A model version loaded for serving, with the adapter that calls it."""

    version: ModelVersion
    adapter: ModelAdapter


def model_metadata(model: ServedModel, versions: list[str]) -> dict[str, Any]:
    """Return the OIP model metadata document of ``model``."""
    return {
        "name": model.version.name,
        "versions": versions,
        "platform": platform_of(model.version),
        "inputs": [spec.to_json() for spec in model.adapter.inputs],
        "outputs": [spec.to_json() for spec in model.adapter.outputs],
    }


def _decompress(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity":
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error, EOFError) as exc:
        raise RequestError(f"the body is not valid {encoding} data") from exc
    raise RequestError(
        f"unsupported Content-Encoding {encoding!r}", hint="send gzip, deflate or identity"
    )


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        size = len(body)
    else:
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 <= size <= len(body):
            raise RequestError(
                f"{HEADER_LENGTH} is {header_length!r}; it must be a number of bytes from 0 "
                f"to the body's size ({len(body)})"
            )
    try:
        document = json.loads(body[:size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise RequestError("the request must be a JSON object with 'inputs'")
    return document, body[size:]


def _parameters(where: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"{where}: 'parameters' must be a JSON object")
    return value


def _decode_inputs(
    document: Mapping[str, Any], binary: bytes
) -> dict[str, tuple[str, np.ndarray[Any, Any]]]:
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError("the request needs a non-empty 'inputs' list")
    decoded: dict[str, tuple[str, np.ndarray[Any, Any]]] = {}
    offset = 0
    for item in raw_inputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError("every input must be a JSON object with a 'name'")
        name = item["name"]
        if name in decoded:
            raise RequestError(f"input {name!r} is given twice")
        datatype, shape = check_header(name, item.get("datatype"), item.get("shape"))
        size = _parameters(f"input {name!r}", item.get("parameters")).get("binary_data_size")
        if size is not None:
            if "data" in item:
                raise RequestError(f"input {name!r} has both 'data' and binary_data_size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise RequestError(f"input {name!r}: binary_data_size must be a byte count")
            if offset + size > len(binary):
                raise RequestError(
                    f"input {name!r}: binary_data_size {size} goes past the end of the body "
                    f"({len(binary) - offset} bytes left)",
                    hint=f"send the JSON part's size in the {HEADER_LENGTH} header",
                )
            array = decode_binary(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in item:
            array = decode_json(name, datatype, shape, item["data"])
        else:
            raise RequestError(f"input {name!r} has no 'data' (nor binary_data_size)")
        decoded[name] = (datatype, array)
    if offset != len(binary):
        raise RequestError(
            f"the body has {len(binary) - offset} bytes of binary data no input claims",
            hint="give each binary input's size in its binary_data_size parameter",
        )
    return decoded


def _check_inputs(
    adapter: ModelAdapter, decoded: Mapping[str, tuple[str, np.ndarray[Any, Any]]]
) -> None:
    if not adapter.inputs or _is_design_matrix(adapter.inputs, decoded):
        return
    expected = {spec.name: spec for spec in adapter.inputs}
    takes = ", ".join(f"{s.name} ({s.datatype} {list(s.shape)})" for s in adapter.inputs)
    for name, (datatype, array) in decoded.items():
        spec = expected.get(name)
        if spec is None:
            raise RequestError(f"unknown input {name!r}; the model takes {takes}")
        if datatype != spec.datatype:
            raise RequestError(
                f"input {name!r} is {datatype}; the model takes {spec.datatype}",
            )
        if not shape_matches(spec.shape, array.shape):
            raise RequestError(
                f"input {name!r} has shape {list(array.shape)}; the model takes "
                f"{list(spec.shape)} (-1: any size)"
            )
    missing = [name for name in expected if name not in decoded]
    if missing:
        raise RequestError(f"missing input {missing[0]!r}; the model takes {takes}")


def _is_design_matrix(
    specs: Sequence[TensorSpec], decoded: Mapping[str, tuple[str, np.ndarray[Any, Any]]]
) -> bool:
    """Whether one 2-D tensor holds every column of a model fitted on a DataFrame.

    Such a model's signature names one 1-D tensor per column; KServe's scikit-learn runtime
    takes the same model as one ``[N, columns]`` tensor instead. Both forms are accepted, so
    a request written for the cluster works here unchanged (the adapter names the columns).
    """
    if len(decoded) != 1 or len(specs) < 2 or any(len(spec.shape) != 1 for spec in specs):
        return False
    ((datatype, array),) = decoded.values()
    return (
        array.ndim == 2
        and array.shape[1] == len(specs)
        and {spec.datatype for spec in specs} == {datatype}
    )


def _requested_outputs(
    document: Mapping[str, Any], adapter: ModelAdapter, binary_default: bool
) -> list[tuple[str, bool]]:
    raw = document.get("outputs")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RequestError("'outputs' must be a list of {\"name\": ...} objects")
    known = [spec.name for spec in adapter.outputs]
    wanted: list[tuple[str, bool]] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError("every requested output must be a JSON object with a 'name'")
        name = item["name"]
        if known and name not in known:
            raise RequestError(f"unknown output {name!r}; the model produces {known}")
        binary = _parameters(f"output {name!r}", item.get("parameters")).get("binary_data")
        wanted.append((name, binary_default if binary is None else bool(binary)))
    return wanted


def _encode(name: str, value: Any, binary: bool) -> EncodedOutput:
    return encode_binary(name, value) if binary else encode_json(name, value)


def infer(
    model: ServedModel,
    body: bytes,
    *,
    header_length: str | None = None,
    content_encoding: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Answer one inference request: return the response body and its headers.

    Args:
        model: the model version to call.
        body: the request body as received.
        header_length: the ``Inference-Header-Content-Length`` header, if any.
        content_encoding: the ``Content-Encoding`` header, if any.

    Raises:
        RequestError: status 400 for a malformed request, 500 when the model raised or
            returned something that cannot be sent.
    """
    document, binary = _split_body(_decompress(body, content_encoding), header_length)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("'id' must be a string")
    parameters = _parameters("the request", document.get("parameters"))
    decoded = _decode_inputs(document, binary)
    adapter = model.adapter
    _check_inputs(adapter, decoded)
    binary_default = bool(parameters.get("binary_data_output", False))
    wanted = _requested_outputs(document, adapter, binary_default)
    arrays = {name: array for name, (_, array) in decoded.items()}
    try:
        produced = adapter.call(arrays, [name for name, _ in wanted])
    except RequestError:
        raise
    except Exception as exc:
        logger.exception("model %s raised", model.version.ref)
        raise RequestError(
            f"model {model.version.ref} raised {type(exc).__name__}: {exc}", status=500
        ) from exc
    binary_of = dict(wanted) if wanted else dict.fromkeys(produced, binary_default)
    try:
        encoded = [_encode(name, produced[name], binary_of[name]) for name in binary_of]
    except ServingError as exc:
        raise RequestError(exc.message, status=500, hint=exc.hint) from exc
    response: dict[str, Any] = {
        "model_name": model.version.name,
        "model_version": str(model.version.version),
    }
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = [output.json for output in encoded]
    try:
        head = json.dumps(response, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:
        raise RequestError(
            f"model {model.version.ref} returned NaN or infinity, which JSON cannot carry",
            status=500,
            hint="request the outputs as binary data (binary_data_output: true)",
        ) from exc
    raws = [output.raw for output in encoded if output.raw is not None]
    if not raws:
        return head, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return head + b"".join(raws), headers
