"""Strict, fast JSON for the model server: request bodies in, response documents out.

Owns: `loads` (bytes -> Python values) and `dumps` (Python values -> bytes) with one rule set,
whichever implementation runs: orjson when it is installed (the ``serve`` extra brings it; it
parses and writes several times faster than the standard library), else the standard
library's `json` configured to match.

Invariants: only RFC 8259 JSON is accepted. The literals ``NaN``, ``Infinity`` and
``-Infinity`` (which Python's `json` accepts by default), numbers beyond the float range
(``1e400``, which would become infinity), integers with more digits than Python converts, text
that is not UTF-8, and nesting deeper than `MAX_DEPTH` levels raise `RequestError` (400), never
`RecursionError` or a 500. `dumps` writes compact UTF-8 JSON; its callers never pass NaN or
infinity (orjson would write ``null``; `tensors.encode_json` refuses them first).

Must not depend on: the web framework, the runner, kfp or notebooks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from cellpipe.serving.tensors import RequestError

__all__ = ["MAX_DEPTH", "dumps", "loads"]

MAX_DEPTH = 256
"""The deepest nesting of arrays and objects a request may have."""

_TOO_DEEP = f"the request nests arrays or objects more than {MAX_DEPTH} levels deep"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (send a number, or binary data for non-finite values)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of the range of a 64-bit float")
    return value


_std_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _std_loads(data: bytes | bytearray) -> Any:
    return _std_decoder.decode(data.decode("utf-8"))


def _std_dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()


def _pick() -> tuple[Callable[[Any], Any], Callable[[Any], bytes]]:
    try:
        import orjson
    except ImportError:  # the standard library, with the same rules
        return _std_loads, _std_dumps
    return orjson.loads, orjson.dumps


_loads, _dumps = _pick()


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests arrays/objects more than `MAX_DEPTH` levels (iteratively)."""
    level = [value]
    for _ in range(MAX_DEPTH):
        deeper: list[Any] = []
        for item in level:
            if isinstance(item, list):
                deeper.extend(v for v in item if isinstance(v, list | dict))
            elif isinstance(item, dict):
                deeper.extend(v for v in item.values() if isinstance(v, list | dict))
        if not deeper:
            return False
        level = deeper
    return True


def loads(data: bytes | bytearray) -> Any:
    """Parse one JSON document.

    Raises:
        RequestError: 400 when ``data`` is not strict JSON or nests deeper than `MAX_DEPTH`.
    """
    try:
        value = _loads(data)
    except RecursionError as exc:  # the standard library on very deep nesting
        raise RequestError(_TOO_DEEP) from exc
    except (ValueError, UnicodeDecodeError, TypeError) as exc:  # orjson's error is a ValueError
        if "depth limit" in str(exc):  # orjson stops at 1,024 levels
            raise RequestError(_TOO_DEEP) from exc
        raise RequestError(f"the request is not valid JSON: {exc}") from exc
    # Cheap guard first: a document with few brackets cannot be deep (the usual request).
    if (
        isinstance(value, list | dict)
        and data.count(b"[") + data.count(b"{") > MAX_DEPTH
        and _too_deep(value)
    ):
        raise RequestError(_TOO_DEEP)
    return value


def dumps(value: Any) -> bytes:
    """Return ``value`` as compact UTF-8 JSON (``value`` holds no NaN or infinity)."""
    return _dumps(value)
