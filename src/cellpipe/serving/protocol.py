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
``deflate`` are accepted. JSON is parsed and written by `codec` (strict; orjson when installed).

Invariants: a malformed request raises `RequestError` (4xx) and never reaches the model;
every size a request claims is checked against the bytes received before anything is
allocated, and a compressed body is inflated no further than ``max_body`` (413). The model
raising one of `adapters.DATA_ERRORS` on the values is the client's error (400 with the
reason); anything else it or its adapter raises is a 500 naming the model version. `run_model`
is the one path from decoded inputs to outputs, for REST (`infer`) and gRPC alike.

Must not depend on: the web framework, the runner, kfp or notebooks.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellpipe.errors import ServingError
from cellpipe.registry.model import ModelVersion, TensorSpec
from cellpipe.serving import codec
from cellpipe.serving.adapters import ModelAdapter, ModelRefused, platform_of
from cellpipe.serving.tensors import (
    EncodedOutput,
    RequestError,
    check_header,
    decode_binary,
    decode_json,
    encode_binary,
    encode_json,
    safe_cast,
    shape_matches,
)

__all__ = [
    "DEFAULT_MAX_BODY",
    "HEADER_LENGTH",
    "ServedModel",
    "infer",
    "model_metadata",
    "run_model",
    "server_version",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 64 * 1024 * 1024
"""The default limit of a request body, in bytes, as received and once decompressed."""

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The binary tensor data extension's header: the byte size of the JSON part of a body."""


def server_version() -> str:
    """The installed cellpipe's version, as the server metadata of REST and gRPC report it."""
    # Not `cellpipe.__version__`: importing the package root links serving to the api layer.
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("cellpipe")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedModel:
    """A model version loaded for serving, with the adapter that calls it."""

    version: ModelVersion
    adapter: ModelAdapter


def model_metadata(model: ServedModel, versions: list[str]) -> dict[str, Any]:
    """Return the OIP model metadata document of ``model``.

    A ``predict`` model whose signature names one 1-D tensor per column (fitted on a
    DataFrame) also says ``"parameters": {"content_type": "pd"}``: the request parameter with
    which KServe's scikit-learn runtime builds a DataFrame from those tensors (without it,
    KServe passes only the first input to the model). Requests shaped by this document thus
    work on both servers; cellpipe accepts them with or without the parameter, and also
    takes the columns as one ``[rows, columns]`` tensor, as KServe does.
    """
    document: dict[str, Any] = {
        "name": model.version.name,
        "versions": versions,
        "platform": platform_of(model.version),
        "inputs": [spec.to_json() for spec in model.adapter.inputs],
        "outputs": [spec.to_json() for spec in model.adapter.outputs],
    }
    if by_columns(model.adapter):
        document["parameters"] = {"content_type": "pd"}
    return document


def by_columns(adapter: ModelAdapter) -> bool:
    """Whether ``adapter`` is a ``predict`` model taking one 1-D tensor per column."""
    return (
        adapter.kind == "predict"
        and bool(adapter.inputs)
        and all(len(spec.shape) == 1 for spec in adapter.inputs)
    )


_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # gzip wrapper; zlib wrapper (RFC 9110)


_INFLATE_STEP = 1 << 20
"""The most output one zlib call may produce while a body is decompressed."""


def _decompress(body: bytes, encoding: str | None, max_body: int) -> bytes:
    """Return ``body`` decoded, never producing more than ``max_body`` bytes.

    Decompressed incrementally (a zlib decompressor with an output bound), so a small gzip
    bomb is refused with 413 after at most ``max_body`` bytes, not after inflating all of it.
    """
    if not encoding:
        return body
    name = encoding.strip().lower()
    if name == "identity":
        return body
    wbits = _WBITS.get(name)
    if wbits is None:
        raise RequestError(
            f"unsupported Content-Encoding {encoding!r:.40}",
            status=415,
            hint="send gzip, deflate or identity",
        )
    parts: list[bytes] = []
    total = 0
    data = body
    try:
        while True:  # a gzip body may hold several members, one after another
            inflater = zlib.decompressobj(wbits)
            while data:
                # At most 1 MiB a call: zlib builds one call's output in blocks it joins at
                # the end, so one large call would briefly hold its output twice.
                chunk = inflater.decompress(data, min(_INFLATE_STEP, max_body - total + 1))
                total += len(chunk)
                if total > max_body:
                    raise RequestError(
                        f"the {name} body decompresses to more than {max_body} bytes",
                        status=413,
                        hint="send a smaller request, or raise the server's body limit",
                    )
                parts.append(chunk)
                data = inflater.unconsumed_tail
                if inflater.eof:
                    break
            if not inflater.eof:
                raise RequestError(f"the body is not valid {name} data: it is cut short")
            data = inflater.unused_data
            if not data or wbits != 31:
                break
    except zlib.error as exc:
        raise RequestError(f"the body is not valid {name} data ({exc})") from exc
    if data:
        raise RequestError(f"the body has {len(data)} bytes after its {name} data")
    return b"".join(parts)


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    if header_length is None:
        size = len(body)
    else:
        text = header_length.strip()
        size = int(text) if text.isascii() and text.isdigit() and len(text) < 19 else -1
        if not 0 <= size <= len(body):
            raise RequestError(
                f"{HEADER_LENGTH} is {header_length!r:.40}; it must be a number of bytes from 0 "
                f"to the body's size ({len(body)})"
            )
    document = codec.loads(body if size == len(body) else body[:size])
    if not isinstance(document, dict):
        raise RequestError("the request must be a JSON object with 'inputs'")
    return document, memoryview(body)[size:]


def _parameters(where: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"{where}: 'parameters' must be a JSON object")
    return value


def _decode_inputs(
    document: Mapping[str, Any], binary: memoryview
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


def _takes(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{s.name} ({s.datatype} {list(s.shape)})" for s in specs)


def _cast(name: str, datatype: str, array: np.ndarray[Any, Any], spec: TensorSpec) -> Any:
    if datatype == spec.datatype:
        return array
    cast = safe_cast(array, spec.datatype)
    if cast is None:
        raise RequestError(
            f"input {name!r} is {datatype}; the model takes {spec.datatype}, and {datatype} "
            f"cannot be converted to it without changing values",
            hint=f"send {spec.datatype} data",
        )
    return cast


def _check_inputs(
    specs: Sequence[TensorSpec], decoded: Mapping[str, tuple[str, np.ndarray[Any, Any]]]
) -> dict[str, np.ndarray[Any, Any]]:
    """Return the model's input arrays: checked against ``specs`` and safely cast to them."""
    if not specs:
        return {name: array for name, (_, array) in decoded.items()}
    expected = {spec.name: spec for spec in specs}
    matrix = _design_matrix(specs, decoded) if not decoded.keys() & expected.keys() else None
    if matrix is not None:
        return matrix
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for name, (datatype, array) in decoded.items():
        spec = expected.get(name)
        if spec is None:
            raise RequestError(f"unknown input {name!r}; the model takes {_takes(specs)}")
        if not shape_matches(spec.shape, array.shape):
            raise RequestError(
                f"input {name!r} has shape {list(array.shape)}; the model takes "
                f"{list(spec.shape)} (-1: any size)"
            )
        arrays[name] = _cast(name, datatype, array, spec)
    missing = [name for name in expected if name not in decoded]
    if missing:
        raise RequestError(f"missing input {missing[0]!r}; the model takes {_takes(specs)}")
    return arrays


def _design_matrix(
    specs: Sequence[TensorSpec], decoded: Mapping[str, tuple[str, np.ndarray[Any, Any]]]
) -> dict[str, np.ndarray[Any, Any]] | None:
    """The one 2-D tensor holding every column of a model fitted on a DataFrame, or None.

    Such a model's signature names one 1-D tensor per column; KServe's scikit-learn runtime
    takes the same model as one ``[N, columns]`` tensor instead (its first input). Both forms
    are accepted, so a request written for the cluster works here unchanged (the adapter
    names the columns). None when the request is not of that form (then it is checked by
    name); a request of that form that does not fit says why.
    """
    if len(decoded) != 1 or len(specs) < 2 or any(len(spec.shape) != 1 for spec in specs):
        return None
    ((name, (datatype, array)),) = decoded.items()
    if array.ndim != 2:
        return None
    if array.shape[1] != len(specs):
        raise RequestError(
            f"input {name!r} has {array.shape[1]} columns; the model takes {len(specs)} "
            f"({', '.join(spec.name for spec in specs)}), as one [rows, {len(specs)}] tensor "
            "or one 1-D tensor per column"
        )
    datatypes = {spec.datatype for spec in specs}
    if len(datatypes) != 1:
        raise RequestError(
            f"input {name!r}: the model's columns have different datatypes "
            f"({_takes(specs)}), which one tensor cannot hold",
            hint="send one 1-D tensor per column, named after it",
        )
    return {name: _cast(name, datatype, array, specs[0])}


def _flag(where: str, parameters: Mapping[str, Any], key: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise RequestError(
            f"{where}: parameter {key!r} must be true or false (a JSON boolean), got {value!r:.40}"
        )
    return value


def _requested_outputs(document: Mapping[str, Any], binary_default: bool) -> list[tuple[str, bool]]:
    raw = document.get("outputs")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RequestError("'outputs' must be a list of {\"name\": ...} objects")
    wanted: list[tuple[str, bool]] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError("every requested output must be a JSON object with a 'name'")
        name = item["name"]
        where = f"output {name!r}"
        binary = _flag(where, _parameters(where, item.get("parameters")), "binary_data")
        wanted.append((name, binary_default if binary is None else binary))
    return wanted


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or "(no message)"
    return f"{type(exc).__name__}: {text[:500]}"


def run_model(
    model: ServedModel,
    inputs: Mapping[str, tuple[str, np.ndarray[Any, Any]]],
    wanted: Sequence[str],
) -> dict[str, Any]:
    """Call ``model`` on decoded inputs; the core that REST and gRPC share.

    Args:
        model: the model version to call.
        inputs: ``{input name: (OIP datatype, array)}`` as the client sent them.
        wanted: the requested output names, in order (empty: the model's defaults).

    Returns:
        ``{output name: array-like}`` in the order of ``wanted`` (the defaults' when empty).

    Raises:
        RequestError: 400 when the inputs do not fit the model (name, datatype after the safe
            casts of `tensors.safe_cast`, shape; the message says which) or the model raised
            one of `adapters.DATA_ERRORS` on the values (ValueError, TypeError, ...); 500 for
            anything else the model or the adapter raised (MemoryError, a bug).
    """
    adapter = model.adapter
    if not inputs:
        raise RequestError("the request needs at least one input")
    known = {spec.name for spec in adapter.outputs}
    if len(set(wanted)) != len(wanted):
        raise RequestError(f"an output is requested twice: {list(wanted)!r:.200}")
    for name in wanted:
        if known and name not in known:
            raise RequestError(f"unknown output {name!r}; the model produces {sorted(known)}")
    arrays = _check_inputs(adapter.inputs, inputs)
    try:
        produced = adapter.call(arrays, wanted)
    except RequestError:
        raise
    except ModelRefused as exc:
        raise RequestError(
            f"model {model.version.ref} cannot take these inputs: {_reason(exc.__cause__ or exc)}",
            hint=f"check the values and the shape against GET /v2/models/{model.version.name}",
        ) from exc
    except Exception as exc:
        logger.exception("model %s raised", model.version.ref)
        raise RequestError(f"model {model.version.ref} failed: {_reason(exc)}", status=500) from exc
    if wanted:
        return {name: produced[name] for name in wanted}
    return produced


def _encode(name: str, value: Any, binary: bool) -> EncodedOutput:
    return encode_binary(name, value) if binary else encode_json(name, value)


def infer(
    model: ServedModel,
    body: bytes,
    *,
    header_length: str | None = None,
    content_encoding: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> tuple[bytes, dict[str, str]]:
    """Answer one inference request: return the response body and its headers.

    Args:
        model: the model version to call.
        body: the request body as received.
        header_length: the ``Inference-Header-Content-Length`` header, if any.
        content_encoding: the ``Content-Encoding`` header, if any.
        max_body: the most bytes a compressed body may decompress to.

    Raises:
        RequestError: 400 for a malformed request or values the model refused, 413 when the
            body decompresses to more than ``max_body``, 415 for an unknown encoding, 500 when
            the model failed or returned something that cannot be sent.
    """
    document, binary = _split_body(_decompress(body, content_encoding, max_body), header_length)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("'id' must be a string")
    parameters = _parameters("the request", document.get("parameters"))
    decoded = _decode_inputs(document, binary)
    binary_default = bool(_flag("the request", parameters, "binary_data_output"))
    wanted = _requested_outputs(document, binary_default)
    produced = run_model(model, decoded, [name for name, _ in wanted])
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
    head = codec.dumps(response)
    raws = [output.raw for output in encoded if output.raw is not None]
    if not raws:
        return head, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return head + b"".join(raws), headers
