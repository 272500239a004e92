"""Validate an InferenceService document against KServe's schemas, offline.

Two schemas, two independent checks, both returned by `problems` as ``path: what`` strings
(empty: valid):

- `fixtures/kserve/inferenceservice-openapi.json`, extracted from KServe 0.21's Python SDK (the
  classes generated from its CRDs' OpenAPI schema) and the kubernetes client by
  `fixtures/kserve/extract_openapi.py`: every unknown field, wrong type and missing required
  field, walking from ``V1beta1InferenceService``;
- `fixtures/kserve/inferenceservice-crd.json`, the CRD's own ``v1beta1`` OpenAPI v3 schema
  (kserve/kserve's config/crd/full, `fixtures/kserve/extract_crd.py`), strict about unknown
  fields as ``kubectl apply --validate=strict`` is, checked with jsonschema.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).parent / "fixtures" / "kserve" / "inferenceservice-openapi.json"
CRD_FILE = SCHEMA_FILE.with_name("inferenceservice-crd.json")

_LIST = re.compile(r"^[lL]ist\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(str, (.+)\)|Dict\[str, (.+)\])$")
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "object": (str, int, float, bool, dict, list),  # IntOrString and free-form values
    "datetime": (str,),
    "date": (str,),
    "ResourceQuantity": (str, int, float),
}


@cache
def schema() -> dict[str, Any]:
    return dict(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


@cache
def _crd_validator() -> Any:
    import jsonschema

    crd = json.loads(CRD_FILE.read_text(encoding="utf-8"))["schema"]
    return jsonschema.Draft7Validator(crd)


def problems(document: Any) -> list[str]:
    """Return what is wrong with ``document`` as an InferenceService (empty when valid)."""
    found: list[str] = []
    _check(document, schema()["root"], "$", found)
    for error in _crd_validator().iter_errors(document):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
        found.append("crd $" + where + f": {error.message}")
    return found


def _check(value: Any, kind: str, path: str, found: list[str]) -> None:
    if (match := _LIST.match(kind)) is not None:
        if not isinstance(value, list):
            found.append(f"{path}: expected a list ({kind}), got {type(value).__name__}")
            return
        for index, item in enumerate(value):
            _check(item, match.group(1), f"{path}[{index}]", found)
        return
    if (match := _DICT.match(kind)) is not None:
        if not isinstance(value, dict):
            found.append(f"{path}: expected a map ({kind}), got {type(value).__name__}")
            return
        inner = match.group(1) or match.group(2)
        for key, item in value.items():
            if not isinstance(key, str):
                found.append(f"{path}: key {key!r} is not a string")
            _check(item, inner, f"{path}.{key}", found)
        return
    if kind in _SCALARS:
        allowed = _SCALARS[kind]
        if not isinstance(value, allowed) or (kind == "int" and isinstance(value, bool)):
            found.append(f"{path}: expected {kind}, got {type(value).__name__} {value!r}")
        return
    classes = schema()["classes"]
    if kind not in classes:
        found.append(f"{path}: the schema has no type {kind}")
        return
    if not isinstance(value, dict):
        found.append(f"{path}: expected an object ({kind}), got {type(value).__name__}")
        return
    fields = classes[kind]["fields"]
    for key, item in value.items():
        if key not in fields:
            found.append(f"{path}: {kind} has no field {key!r}")
        else:
            _check(item, fields[key], f"{path}.{key}", found)
    for key in classes[kind]["required"]:
        if key not in value:
            found.append(f"{path}: {kind} requires {key!r}")
