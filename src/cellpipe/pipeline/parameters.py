"""Parameter values for a run: the notebook's defaults with the user's overrides applied.

Owns: parsing ``NAME=VALUE`` text (from ``-p``) to the declared type, checking Python values
(from ``cellpipe.run(params=...)``) against it, and the resulting value mapping.

Invariants: a value always has the parameter's declared type (an int is accepted where a float
is declared, and becomes a float); unknown names and ill-typed values are a `ParameterError`
with a "did you mean" hint; values are data, never code. Values are finite: NaN and infinity
(``nan``, ``inf``, ``1e999``) are refused, because JSON has no such numbers (the run records,
``--json`` and Kubeflow parameters are JSON) and NaN is not equal to itself, so the same run
could not be recognised as cached. Lists and dicts nest at most `MAX_DEPTH` levels.

Must not depend on: notebooks, storage, the runner.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
from collections.abc import Iterable, Mapping

from cellpipe.errors import ParameterError
from cellpipe.pipeline.model import JsonValue, Parameter, Pipeline

MAX_DEPTH = 100
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """Split ``NAME=VALUE`` strings into a dict of raw text.

    Raises:
        ParameterError: for an item without ``=``.
    """
    raw: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError(
                f"'{item}' is not a parameter assignment",
                hint="write -p NAME=VALUE, for example -p MAX_DEPTH=6",
            )
        raw[name.strip()] = value
    return raw


def parse_untyped(name: str, raw: str) -> JsonValue:
    """Parse ``-p NAME=VALUE`` text with no declared type (a compiled pipeline's arguments).

    JSON text is parsed (``3``, ``[1, 2]``, ``true``), anything else stays a string.

    Raises:
        ParameterError: for NaN or infinity, or lists and dicts nested too deeply.
    """
    unknown = Parameter(name=name, type="NoneType", default=None, cell=0, line=0)
    try:
        value: JsonValue = json.loads(raw)
    except (RecursionError, MemoryError) as exc:
        raise _too_deep(unknown) from exc
    except ValueError:
        return raw
    return _json_value(unknown, value)


def resolve_parameters(
    pipeline: Pipeline,
    *,
    text: Mapping[str, str] | None = None,
    values: Mapping[str, object] | None = None,
) -> dict[str, JsonValue]:
    """Return every parameter's value for a run: defaults, then overrides.

    Args:
        pipeline: the pipeline whose parameters are set.
        text: overrides as text (``-p NAME=VALUE``), parsed to the declared type.
        values: overrides as Python values (``cellpipe.run(params=...)``), checked.

    Returns:
        Parameter name -> value, in notebook order.

    Raises:
        ParameterError: for an unknown name or a value of the wrong type.
    """
    declared = {p.name: p for p in pipeline.parameters}
    result: dict[str, JsonValue] = {p.name: p.default for p in pipeline.parameters}
    for name, raw in (text or {}).items():
        param = _lookup(declared, name, pipeline.path)
        result[name] = _parse_text(param, raw)
    for name, value in (values or {}).items():
        param = _lookup(declared, name, pipeline.path)
        result[name] = _check_value(param, value)
    return result


def _lookup(declared: Mapping[str, Parameter], name: str, path: str) -> Parameter:
    if name in declared:
        return declared[name]
    close = difflib.get_close_matches(name, list(declared), n=1)
    if close:
        hint = f"did you mean '{close[0]}'?"
    elif declared:
        hint = "its parameters are " + ", ".join(sorted(declared))
    else:
        hint = "add a cell tagged pipeline-parameters with NAME = value lines"
    raise ParameterError(f"{path} has no parameter '{name}'", hint=hint)


def _type_error(param: Parameter, shown: str) -> ParameterError:
    article = "an" if param.type[0] in "aeiou" else "a"
    return ParameterError(
        f"parameter {param.name} is {article} {param.type} (default {param.default!r}, cell "
        f"{param.cell}); {shown} is not {article} {param.type}",
        hint=f"give a value like -p {param.name}={json.dumps(param.default)}",
    )


def _parse_text(param: Parameter, raw: str) -> JsonValue:
    text = raw.strip()
    kind = param.type
    try:
        if kind == "str":
            return raw
        if kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(text)
        if kind == "int":
            return int(text)
        if kind == "float":
            return _json_value(param, float(text))
        if kind == "NoneType":
            # The default is None, so any literal is allowed; plain text stays a string.
            if text in ("None", "null", ""):
                return None
            return _json_value(param, _literal(param, text))
        if kind in ("list", "dict"):
            return _check_value(param, _literal(param, text))
    except ParameterError:
        raise
    except (ValueError, SyntaxError) as exc:
        raise _type_error(param, repr(raw)) from exc
    raise _type_error(param, repr(raw))


def _literal(param: Parameter, text: str) -> JsonValue:
    # Both parsers recurse once per nesting level: a 3,000-deep list must be an error, not a
    # RecursionError (MemoryError is CPython's parser running out of its own stack).
    try:
        try:
            value: JsonValue = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
    except (RecursionError, MemoryError) as exc:
        raise _too_deep(param) from exc
    return value


def _named(param: Parameter) -> str:
    return f"parameter {param.name}" + (f" (cell {param.cell})" if param.cell else "")


def _too_deep(param: Parameter) -> ParameterError:
    return ParameterError(
        f"{_named(param)}: the value nests lists or dicts more than {MAX_DEPTH} levels deep",
        hint=f"flatten the value to at most {MAX_DEPTH} levels, or read it from a file in a step",
    )


def _depth_exceeds(value: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | tuple | dict):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _check_value(param: Parameter, value: object) -> JsonValue:
    expected = {
        "int": int,
        "float": float,
        "bool": bool,
        "str": str,
        "list": list,
        "dict": dict,
    }.get(param.type)
    if expected is None:  # default None: anything JSON-like goes
        return _json_value(param, value)
    if param.type == "float" and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError as exc:
            raise _not_finite(param, value) from exc
    if isinstance(value, bool) and param.type != "bool":
        raise _type_error(param, repr(value))
    if not isinstance(value, expected):
        raise _type_error(param, repr(value))
    return _json_value(param, value)


def _not_finite(param: Parameter, value: object) -> ParameterError:
    shown = repr(value) if isinstance(value, float) else "a number beyond the float range"
    return ParameterError(
        f"{_named(param)}: {shown} is not a finite number; NaN and "
        "infinity are not accepted as parameter values (JSON has no such numbers, and NaN is "
        "not equal to itself, so runs with it could never be recognised as cached)",
        hint="pass a finite number, or use None (null) for 'no value'",
    )


def _has_non_finite(value: object) -> object | None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return item
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return None


def _json_value(param: Parameter, value: object) -> JsonValue:
    if _depth_exceeds(value, MAX_DEPTH):
        raise _too_deep(param)
    bad = _has_non_finite(value)
    if bad is not None:
        raise _not_finite(param, bad)
    try:
        return json.loads(json.dumps(value, allow_nan=False))  # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        raise ParameterError(
            f"parameter {param.name}: {value!r} is not a JSON value",
            hint="parameters are numbers, strings, booleans, None, and lists and dicts of those",
        ) from exc
