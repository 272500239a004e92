"""Tensors of the Open Inference Protocol v2: datatypes, JSON data and binary data, to numpy.

Owns: the table of OIP datatypes and their numpy dtypes, decoding a request input (JSON
``data``, flat or nested, or a chunk of the binary tensor data extension) to a numpy array of
the declared shape, and encoding a numpy array (or anything `numpy.asarray` accepts) as a
response output, as JSON ``data`` or as raw bytes.

Invariants: binary data is little-endian and row-major; a ``BYTES`` element in binary form is a
4-byte little-endian length followed by the bytes (what Triton and tritonclient use). ``BYTES``
elements reach a model as ``str`` (bytes that are not UTF-8 stay ``bytes``). Every malformed
tensor raises `RequestError` (HTTP 400) with the tensor's name; nothing is coerced silently
(a float is not accepted for an integer type, nor a number for ``BOOL``).

Must not depend on: the web framework (the app calls these functions), the runner, kfp or
notebooks.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellpipe.errors import ServingError

__all__ = [
    "NUMPY_DTYPES",
    "RequestError",
    "datatype_of",
    "decode_binary",
    "decode_json",
    "encode_binary",
    "encode_json",
]

NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
"""OIP datatype -> the numpy dtype a model receives (``BYTES``: an object array of str)."""

_BY_KIND_SIZE = {
    (np.dtype(dt).kind, np.dtype(dt).itemsize): name
    for name, dt in NUMPY_DTYPES.items()
    if name != "BYTES"
}


class RequestError(ServingError):
    """A request the server refuses; ``status`` is the HTTP status (400, 404, ...)."""

    headline = "bad inference request"

    def __init__(self, message: str, *, status: int = 400, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodedOutput:
    """One response output: its JSON object and, for binary data, the bytes that follow."""

    json: dict[str, Any]
    raw: bytes | None = None


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """Return the OIP datatype of a numpy array (object, str and bytes arrays are ``BYTES``).

    Raises:
        ServingError: for dtypes OIP has no datatype for (complex, datetime, ...).
    """
    dtype = array.dtype
    if dtype.kind in "OUS":
        return "BYTES"
    name = _BY_KIND_SIZE.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise ServingError(
            f"the model returned an array of dtype {dtype}, which the Open Inference Protocol "
            "cannot carry",
            hint="return booleans, integers, floats or strings",
        )
    return name


def check_header(name: str, datatype: Any, shape: Any) -> tuple[str, tuple[int, ...]]:
    """Validate a tensor's ``datatype`` and ``shape`` fields; return them typed."""
    if not isinstance(datatype, str) or datatype not in NUMPY_DTYPES:
        raise RequestError(
            f"input {name!r}: unsupported datatype {datatype!r}",
            hint="use one of " + ", ".join(NUMPY_DTYPES),
        )
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise RequestError(
            f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}"
        )
    return datatype, tuple(shape)


def _flat(data: list[Any]) -> list[Any]:
    """The elements of flat or nested (row-major) ``data``, in order."""
    kinds = set(map(type, data))
    if list not in kinds:
        return data
    if kinds == {list}:
        rows = list(itertools.chain.from_iterable(data))
        if list not in set(map(type, rows)):
            return rows  # the usual [[row], [row], ...]
    flat: list[Any] = []
    _flatten(data, flat)
    return flat


def _flatten(data: Any, out: list[Any]) -> None:
    if isinstance(data, list):
        for item in data:
            _flatten(item, out)
    else:
        out.append(data)


# The exact Python types JSON decoding gives each datatype's valid elements (``bool`` is not
# an ``int`` here: True is refused where a number is expected, as `_element_ok` says).
_ELEMENT_TYPES: dict[str, frozenset[type]] = {
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
    **{t: frozenset({int}) for t in ("INT8", "INT16", "INT32", "INT64")},
    **{t: frozenset({int}) for t in ("UINT8", "UINT16", "UINT32", "UINT64")},
    **{t: frozenset({int, float}) for t in ("FP16", "FP32", "FP64")},
}


def _element_ok(datatype: str, value: Any) -> bool:
    if datatype == "BOOL":
        return isinstance(value, bool)
    if datatype == "BYTES":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if datatype.startswith(("INT", "UINT")):
        return isinstance(value, int)
    return isinstance(value, int | float)


def decode_json(
    name: str, datatype: str, shape: tuple[int, ...], data: Any
) -> np.ndarray[Any, Any]:
    """Return the JSON ``data`` of an input (flat or nested, row-major) as an array of ``shape``.

    Raises:
        RequestError: when the data is not a list, an element is not of ``datatype``, a value
            is out of range, or the number of elements does not match the shape.
    """
    if not isinstance(data, list):
        raise RequestError(f"input {name!r}: 'data' must be a JSON array, got {data!r:.60}")
    flat = _flat(data)
    expected = math.prod(shape)
    if len(flat) != expected:
        raise RequestError(
            f"input {name!r}: shape {list(shape)} needs {expected} elements, "
            f"the data has {len(flat)}"
        )
    if not set(map(type, flat)) <= _ELEMENT_TYPES.get(datatype, frozenset()):  # else: which one
        for value in flat:
            if not _element_ok(datatype, value):
                raise RequestError(
                    f"input {name!r}: {value!r:.40} is not a valid {datatype} element"
                )
    dtype = NUMPY_DTYPES[datatype]
    try:
        if datatype == "BYTES":
            array = np.empty(len(flat), dtype=object)
            array[:] = flat
        else:
            array = np.array(flat, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise RequestError(f"input {name!r}: a value is out of range for {datatype}") from exc
    return array.reshape(shape)


def _split_bytes(name: str, raw: bytes, count: int) -> np.ndarray[Any, Any]:
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise RequestError(f"input {name!r}: binary BYTES data ends after {i} elements")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        chunk = raw[offset : offset + size]
        if len(chunk) != size:
            raise RequestError(f"input {name!r}: binary BYTES element {i} is cut short")
        offset += size
        try:
            out[i] = chunk.decode("utf-8")
        except UnicodeDecodeError:
            out[i] = chunk
    if offset != len(raw):
        raise RequestError(
            f"input {name!r}: binary BYTES data has {len(raw) - offset} bytes after "
            f"{count} elements"
        )
    return out


def decode_binary(
    name: str, datatype: str, shape: tuple[int, ...], raw: bytes
) -> np.ndarray[Any, Any]:
    """Return the binary tensor data of an input as an array of ``shape``.

    Raises:
        RequestError: when the byte count does not match the shape and datatype.
    """
    count = math.prod(shape)
    if datatype == "BYTES":
        return _split_bytes(name, raw, count).reshape(shape)
    dtype = NUMPY_DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            f"input {name!r}: shape {list(shape)} of {datatype} needs "
            f"{count * dtype.itemsize} bytes, binary_data_size is {len(raw)}"
        )
    # A copy: the model may write to its input, and frombuffer over bytes is read-only.
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _as_array(value: Any) -> np.ndarray[Any, Any]:
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype.kind == "b" or array.dtype.byteorder in "=<|":
        return array
    return array.astype(array.dtype.newbyteorder("<"))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ServingError(
                "an output holds bytes that are not UTF-8 and cannot be sent as JSON",
                hint="request the output with binary data (parameters: binary_data: true)",
            ) from exc
    return str(value)


def encode_json(name: str, value: Any) -> EncodedOutput:
    """Return a model output as an OIP response output with JSON ``data`` (flat)."""
    array = _as_array(value)
    datatype = datatype_of(array)
    flat = array.reshape(-1)
    data = [_text(v) for v in flat] if datatype == "BYTES" else flat.tolist()
    return EncodedOutput(
        json={"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}
    )


def encode_binary(name: str, value: Any) -> EncodedOutput:
    """Return a model output as an OIP response output with binary data."""
    array = _as_array(value)
    datatype = datatype_of(array)
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1):
            chunk = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(struct.pack("<I", len(chunk)))
            parts.append(chunk)
        raw = b"".join(parts)
    else:
        raw = np.ascontiguousarray(array).tobytes()
    return EncodedOutput(
        json={
            "name": name,
            "datatype": datatype,
            "shape": list(array.shape),
            "parameters": {"binary_data_size": len(raw)},
        },
        raw=raw,
    )


def shape_matches(declared: Sequence[int], actual: Sequence[int]) -> bool:
    """Return whether ``actual`` fits ``declared`` (-1 matches any size)."""
    return len(declared) == len(actual) and all(
        d == -1 or d == a for d, a in zip(declared, actual, strict=True)
    )
