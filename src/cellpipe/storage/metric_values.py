"""Metric values as JSON: what a pipeline metric's Python value is recorded as.

Owns: `metric_json`, the one conversion from a metric variable's value (a number, a string, a
confusion matrix, a classification report, per-class scores, a data frame) to the JSON value
the metadata store keeps, and `MetricValueError`, what it raises for a value that has no
faithful JSON form; and `MAX_METRIC_JSON`, the size above which a value is refused.

Rules (documented in the README's metrics section):
    * ``bool``, ``int``, ``str`` and ``None`` are kept as they are; finite floats too;
    * NaN and +/-infinity become ``null`` (JSON has no such numbers), at any depth;
    * numpy scalars become Python numbers (``.item()``), numpy arrays nested lists
      (``.tolist()``);
    * lists and tuples become lists, dicts stay dicts; dict keys that are strings are kept,
      numbers, booleans and None become their JSON spelling (``1`` -> ``"1"``, ``True`` ->
      ``"true"``), as ``json.dumps`` would write them; any other key is refused;
    * a pandas Series becomes ``{index: value}``; a DataFrame ``[{column: value}, ...]``
      (records) when its index is the default 0..n-1, else ``{index: {column: value}}``;
    * anything else (a model, a set, a complex number, a date), a value nested deeper than
      `MAX_DEPTH` or whose JSON text is longer than `MAX_METRIC_JSON` characters is refused
      with a `MetricValueError` saying why; the caller warns, it never drops a value silently.

Invariants: pure; never imports numpy or pandas (a value of theirs means they are loaded
already, and they are recognised by duck typing and module name); the result is a fresh
JSON value (no shared mutable containers with the input).

Must not depend on: notebooks, the pipeline model, the runner.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_METRIC_JSON", "MetricValueError", "metric_json"]

MAX_METRIC_JSON = 1_000_000
"""The longest JSON text (characters) a metric may have: a metric is a summary (a confusion
matrix, a report), not data; a larger value belongs in a step output."""

MAX_DEPTH = 32
"""How deeply containers may nest (also stops self-containing lists)."""


class MetricValueError(ValueError):
    """A metric's value has no faithful JSON form; the message says what and why."""


def _type_name(value: object) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _key(key: object, path: str) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key, allow_nan=True)
    item = getattr(key, "item", None)
    if callable(item) and getattr(key, "shape", None) == ():
        return _key(item(), path)
    raise MetricValueError(
        f"{path} has a key of type {_type_name(key)} ({key!r}); JSON object keys are strings"
    )


def _is_pandas(value: object, name: str) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, getattr(pandas, name))


def _convert(value: Any, path: str, depth: int) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _float(value)
    if depth > MAX_DEPTH:
        raise MetricValueError(f"{path} nests containers more than {MAX_DEPTH} levels deep")
    if isinstance(value, list | tuple):
        return [_convert(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = _key(k, path)
            if key in out:
                raise MetricValueError(f"{path} has two keys written {key!r} in JSON")
            out[key] = _convert(v, f"{path}[{key!r}]", depth + 1)
        return out
    if _is_pandas(value, "Series"):
        return _convert(dict(value.to_dict()), path, depth)
    if _is_pandas(value, "DataFrame"):
        pandas = sys.modules["pandas"]
        index = value.index
        if isinstance(index, pandas.RangeIndex) and index.start == 0 and index.step == 1:
            return _convert(value.to_dict(orient="records"), path, depth)
        if not index.is_unique:
            raise MetricValueError(f"{path} is a DataFrame whose index has duplicates")
        return _convert(value.to_dict(orient="index"), path, depth)
    shape = getattr(value, "shape", None)
    if type(value).__module__.split(".")[0] == "numpy" and shape is not None:
        # Elements are checked by the recursion (object arrays of strings are fine, of
        # complex numbers or dates not).
        converted = value.item() if shape == () else value.tolist()
        return _convert(converted, path, depth)
    raise MetricValueError(f"{path} is of type {_type_name(value)}, which has no JSON form")


def metric_json(name: str, value: object) -> Any:
    """Return ``value`` as the JSON value recorded for metric ``name``.

    Args:
        name: the metric's name (used in error messages).
        value: the metric variable's value.

    Returns:
        A JSON value: None, bool, int, finite float, str, or lists and string-keyed dicts of
        those (NaN and infinity as None).

    Raises:
        MetricValueError: when the value (or a part of it) has no JSON form, nests too deeply
            or is longer than `MAX_METRIC_JSON` characters as JSON.

    Example::

        metric_json("cm", np.array([[5, 1], [0, 4]]))  # [[5, 1], [0, 4]]
        metric_json("score", float("nan"))  # None
    """
    try:
        converted = _convert(value, name, 0)
    except RecursionError as exc:  # a pandas object holding itself, say
        raise MetricValueError(f"{name} nests too deeply to convert") from exc
    size = len(json.dumps(converted))
    if size > MAX_METRIC_JSON:
        raise MetricValueError(
            f"{name} is {size:,} characters as JSON, more than a metric may hold "
            f"({MAX_METRIC_JSON:,})"
        )
    return converted
