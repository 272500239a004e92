"""The real model server against the Open Inference Protocol's OpenAPI document (schemathesis).

Property-based requests generated from ``../shared/specs/open_inference_rest.yaml`` (or the
copy `CELLPIPE_OIP_SPEC` names) go to `cellpipe.serving.start_server` on 127.0.0.1:0 (uvicorn
in a thread) serving real scikit-learn models registered in a real (in-memory) registry, with
signatures inferred from their input examples. Every response must not be a 5xx, must carry
a content type the document allows, and must conform to the document's schema where it gives
one. Bounded and deterministic: `MAX_EXAMPLES` per operation, derandomized (a fixed seed).

Adaptations of the published document, all in `_spec`:
- its path templates are written ``${MODEL_NAME}``; OpenAPI's are ``{MODEL_NAME}`` (the ``$``
  would be sent literally), so the ``$`` is dropped;
- focused generation, within what the document allows: ``MODEL_NAME`` is drawn from the
  served names and one unknown name, ``MODEL_VERSION`` from real, missing and odd versions,
  and request inputs from the served models' input names and the OIP datatypes (plus one
  unknown), with short shapes, at least one input each. Unconstrained, nearly every case
  was a 404 or had no input, and an infer path that failed on any ``data`` went unnoticed.
The document's known slips (``../shared/specs/README.md``: the prose prints the server-ready
response as ``{"live"}``; one example request has shape [3] with one value) need nothing
here: the YAML gives no schema for health responses, and that example is answered 400.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis")
yaml = pytest.importorskip("yaml")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
)

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 60
SERVED = ("iris", "wine", "double")
DATATYPES = ["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]


def _spec_path() -> Path:
    named = os.environ.get("CELLPIPE_OIP_SPEC")
    if named:
        return Path(named)
    return Path(__file__).resolve().parents[3] / "shared" / "specs" / "open_inference_rest.yaml"


def _spec() -> dict[str, Any]:
    path = _spec_path()
    if not path.is_file():
        pytest.skip(f"the OIP OpenAPI document is not at {path} (set CELLPIPE_OIP_SPEC)")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    paths = {key.replace("${", "{"): value for key, value in raw["paths"].items()}
    for item in paths.values():
        for parameter in item.get("parameters", []):
            if parameter["name"] == "MODEL_NAME":
                parameter["schema"] = {"type": "string", "enum": [*SERVED, "nope"]}
            if parameter["name"] == "MODEL_VERSION":
                parameter["schema"] = {"type": "string", "enum": ["1", "2", "0", "01", "x", "²"]}
    raw["paths"] = paths
    schemas = raw["components"]["schemas"]
    schemas["inference_request"]["properties"]["inputs"]["minItems"] = 1
    schemas["inference_request"]["properties"]["inputs"]["maxItems"] = 3
    tensor = schemas["request_input"]["properties"]
    tensor["name"] = {"type": "string", "enum": ["input-0", "alcohol", "malic_acid", "ash", "z"]}
    tensor["datatype"] = {"type": "string", "enum": [*DATATYPES, "FP128"]}
    tensor["shape"] = {
        "type": "array",
        "items": {"type": "integer", "minimum": -1, "maximum": 5},
        "maxItems": 3,
    }
    schemas["tensor_data"]["maxItems"] = 8
    return raw


schema = schemathesis.openapi.from_dict(_spec()) if _spec_path().is_file() else None


def double(x: np.ndarray) -> np.ndarray:
    return x * 2


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    from sklearn.datasets import load_iris, load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.serving import start_server
    from cellpipe.storage.artifacts import MemoryArtifactStore
    from cellpipe.storage.metadata import MemoryMetadataStore

    registry = ModelRegistry(MemoryMetadataStore(), MemoryArtifactStore())
    x, y = load_iris(return_X_y=True)
    registry.register(LogisticRegression(max_iter=500).fit(x, y), "iris", input_example=x[:2])
    wine = load_wine(as_frame=True).frame
    columns = wine[["alcohol", "malic_acid", "ash"]]
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(columns, wine["target"])
    registry.register(tree, "wine", input_example=columns.head(2))
    registry.register(double, "double", packages={})
    with start_server(list(SERVED), registry) as running:
        yield running.url


if schema is not None:

    @schema.parametrize()
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def test_every_operation_conforms_and_never_answers_5xx(case: Any, base_url: str) -> None:
        case.call_and_validate(
            base_url=base_url,
            checks=[not_a_server_error, content_type_conformance, response_schema_conformance],
        )
