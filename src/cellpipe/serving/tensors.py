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

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellpipe.errors import ServingError

__all__ = [
    "MAX_ELEMENTS",
    "MAX_RANK",
    "NUMPY_DTYPES",
    "RequestError",
    "datatype_of",
    "decode_binary",
    "decode_json",
    "encode_binary",
    "encode_json",
    "safe_cast",
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


MAX_RANK = 32
"""The most dimensions a tensor may have (numpy's own limit is 64)."""

MAX_ELEMENTS = 2**40
"""The most elements a tensor's shape may claim; any real request is bounded far lower by the
body limit (a claimed size is always checked against the bytes received before allocating)."""


def check_header(name: str, datatype: Any, shape: Any) -> tuple[str, tuple[int, ...]]:
    """Validate a tensor's ``datatype`` and ``shape`` fields; return them typed.

    Raises:
        RequestError: 400 for an unknown datatype, a shape that is not a list of non-negative
            integers, has more than `MAX_RANK` dimensions, or claims more than `MAX_ELEMENTS`
            elements (nothing is allocated from a shape before its data is checked).
    """
    if not isinstance(datatype, str) or datatype not in NUMPY_DTYPES:
        raise RequestError(
            f"input {name!r}: unsupported datatype {datatype!r:.40}",
            hint="use one of " + ", ".join(NUMPY_DTYPES),
        )
    if not isinstance(shape, list) or not all(
        type(d) is int and d >= 0
        for d in shape  # type(d) is int: a bool is not a dimension
    ):
        raise RequestError(
            f"input {name!r}: shape must be a list of non-negative integers, got {shape!r:.80}"
        )
    if len(shape) > MAX_RANK:
        raise RequestError(
            f"input {name!r}: shape has {len(shape)} dimensions; at most {MAX_RANK} are accepted"
        )
    if shape and (max(shape) > MAX_ELEMENTS or math.prod(shape) > MAX_ELEMENTS):
        raise RequestError(
            f"input {name!r}: shape {shape!r:.80} claims more than {MAX_ELEMENTS} elements",
            status=413,
        )
    return datatype, tuple(shape)


def _flat(name: str, data: list[Any], shape: tuple[int, ...]) -> list[Any]:
    """The elements of flat or nested (row-major) ``data``, in order.

    Flat data is any list without lists in it (its length is checked by the caller). Nested
    data must have exactly the shape's structure: one level per dimension, each list as long
    as its dimension, so a 13x2 nesting for shape [2, 13] or ragged rows are refused, never
    re-flattened. Only the received lists are walked; nothing is allocated from the shape.
    """
    if list not in set(map(type, data)):
        return data
    level: list[Any] = [data]
    for depth, size in enumerate(shape):
        items: list[Any] = []
        for part in level:
            if type(part) is not list or len(part) != size:
                got = f"a list of {len(part)}" if type(part) is list else f"{part!r:.20}"
                raise RequestError(
                    f"input {name!r}: the nested data does not have shape {list(shape)} "
                    f"(at depth {depth} a list of {size} was expected, got {got})",
                    hint="send flat row-major data, or nest it exactly as the shape says",
                )
            items.extend(part)
        level = items
    if list in set(map(type, level)):
        raise RequestError(
            f"input {name!r}: the nested data is deeper than shape {list(shape)}",
            hint="send flat row-major data, or nest it exactly as the shape says",
        )
    return level


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
        RequestError: when the data is not a list, is nested other than the shape says, an
            element is not of ``datatype``, a value is out of range, or the number of elements
            does not match the shape (checked before anything is allocated).
    """
    if not isinstance(data, list):
        raise RequestError(f"input {name!r}: 'data' must be a JSON array, got {data!r:.60}")
    flat = _flat(name, data, shape)
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


def _split_bytes(name: str, raw: bytes | memoryview, count: int) -> np.ndarray[Any, Any]:
    # Every element takes at least its 4-byte length: a cheap bound on the claimed count,
    # checked before the object array is allocated (a 150-byte body claiming [1e12] is a 400).
    if count * 4 > len(raw):
        raise RequestError(
            f"input {name!r}: {count} BYTES elements need at least {count * 4} bytes "
            f"(a 4-byte length each), binary_data_size is {len(raw)}"
        )
    view = memoryview(raw)
    out = np.empty(count, dtype=object)
    offset = 0
    unpack = struct.Struct("<I").unpack_from
    for i in range(count):
        if offset + 4 > len(view):
            raise RequestError(f"input {name!r}: binary BYTES data ends after {i} elements")
        (size,) = unpack(view, offset)
        offset += 4
        if offset + size > len(view):
            raise RequestError(f"input {name!r}: binary BYTES element {i} is cut short")
        chunk = bytes(view[offset : offset + size])
        offset += size
        try:
            out[i] = chunk.decode("utf-8")
        except UnicodeDecodeError:
            out[i] = chunk
    if offset != len(view):
        raise RequestError(
            f"input {name!r}: binary BYTES data has {len(view) - offset} bytes after "
            f"{count} elements"
        )
    return out


def decode_binary(
    name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview
) -> np.ndarray[Any, Any]:
    """Return the binary tensor data of an input as an array of ``shape``.

    Raises:
        RequestError: when the byte count does not match the shape and datatype (checked
            before anything is allocated).
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
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    # The model may write to its input: a view of a read-only body (bytes) is copied once; a
    # writable buffer (bytearray) is used as it is.
    return array if array.flags.writeable else array.copy()


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
    if array.dtype.kind == "f" and not np.isfinite(flat).all():
        raise ServingError(
            f"output {name!r} holds NaN or infinity, which JSON cannot carry",
            hint="request the output as binary data (parameters: binary_data: true)",
        )
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


# The integers a float datatype holds exactly: 2**(mantissa bits + 1).
_EXACT_INTEGERS = {"FP16": 2**11, "FP32": 2**24, "FP64": 2**53}


def safe_cast(array: np.ndarray[Any, Any], target: str) -> np.ndarray[Any, Any] | None:
    """Return ``array`` as OIP datatype ``target`` when no value changes, else None.

    The conversions KServe's runtime lets through because the model converts them anyway:
    a float to a wider float (FP32 -> FP64), an integer to a wider integer (INT32 -> INT64,
    UINT8 -> INT16, ...), and an integer to a float that holds every value exactly (INT32 ->
    FP64 always; INT64 -> FP64 when every value is within 2**53). Never a float to an
    integer, a narrowing, nor anything to or from ``BOOL`` or ``BYTES``.
    """
    dtype = NUMPY_DTYPES[target]
    source = array.dtype
    if source == dtype:
        return array
    if source.kind not in "iuf" or dtype.kind not in "iuf":
        return None
    if source.kind == dtype.kind == "f" or dtype.kind in "iu":
        return array.astype(dtype) if np.can_cast(source, dtype, "safe") else None
    if source.kind == "f":
        return None
    exact = _EXACT_INTEGERS[target]
    wider = source.itemsize * 8 - (source.kind == "i") > exact.bit_length() - 1
    if wider and array.size and not (int(array.min()) >= -exact and int(array.max()) <= exact):
        return None  # an integer the float would round
    return array.astype(dtype)


def shape_matches(declared: Sequence[int], actual: Sequence[int]) -> bool:
    """Return whether ``actual`` fits ``declared`` (-1 matches any size)."""
    return len(declared) == len(actual) and all(
        d == -1 or d == a for d, a in zip(declared, actual, strict=True)
    )
