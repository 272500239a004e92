"""Fixtures for the model server: an in-memory ModelSource with real models, a real server.

`MemorySource` implements the registry's `ModelSource` protocol over a dict of real objects:
scikit-learn classifiers trained on iris (two versions) and on three wine columns (fitted on a
DataFrame, one input tensor per column), and plain Python callables. `server` starts the real
uvicorn server on a free loopback port and waits for /v2/health/ready.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest

from cellpipe.errors import ModelNotFoundError
from cellpipe.registry.model import (
    ModelRef,
    ModelVersion,
    Signature,
    TensorSpec,
    parse_model_ref,
)
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import ArtifactRef


class MemorySource:
    """A ModelSource over real objects; records every load."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, int], Any] = {}
        self.by_name: dict[str, list[ModelVersion]] = {}
        self.aliases: dict[tuple[str, str], int] = {}
        self.loads: list[str] = []

    def add(
        self,
        name: str,
        obj: Any,
        *,
        signature: Signature | None = None,
        aliases: tuple[str, ...] = (),
        serializer: str | None = None,
    ) -> ModelVersion:
        number = len(self.by_name.get(name, [])) + 1
        kind = type(obj)
        type_name = f"{kind.__module__}.{kind.__qualname__}"
        if serializer is None:
            serializer = "joblib" if kind.__module__.startswith("sklearn") else "cloudpickle"
        version = ModelVersion(
            name=name,
            version=number,
            artifact=ArtifactRef(
                digest=ArtifactDigest("sha256:" + f"{name}{number}".encode().hex().ljust(64, "0")),
                serializer=serializer,
                serializer_version=2,
                size=1000,
                type_name=type_name,
            ),
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            run_id=f"train-{number}",
            signature=signature,
            aliases=aliases,
        )
        self.objects[(name, number)] = obj
        self.by_name.setdefault(name, []).append(version)
        for alias in aliases:
            self.aliases[(name, alias)] = number
        return version

    def resolve(self, ref: str | ModelRef) -> ModelVersion:
        parsed = parse_model_ref(ref) if isinstance(ref, str) else ref
        versions = self.by_name.get(parsed.name, [])
        number: int | None
        if parsed.version is not None:
            number = parsed.version
        elif parsed.alias is not None:
            number = self.aliases.get((parsed.name, parsed.alias))
        else:
            number = versions[-1].version if versions else None
        for version in versions:
            if version.version == number:
                return version
        raise ModelNotFoundError(f"no model version {parsed}", hint="cellpipe models list")

    def versions(self, name: str) -> list[ModelVersion]:
        return list(self.by_name.get(name, []))

    def load(self, version: ModelVersion) -> Any:
        self.loads.append(version.ref)
        return self.objects[(version.name, version.version)]


def double(x: np.ndarray) -> np.ndarray:
    return x * 2


def echo(x: np.ndarray) -> np.ndarray:
    return x


def split_stats(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {"total": x + y, "label": np.array(["big" if v > 10 else "small" for v in x + y])}


def broken(x: np.ndarray) -> np.ndarray:
    raise ValueError("the model is broken on purpose")


IRIS_SIGNATURE = Signature(
    inputs=(TensorSpec(name="input-0", datatype="FP64", shape=(-1, 4)),),
    outputs=(
        TensorSpec(name="predict", datatype="INT64", shape=(-1,)),
        TensorSpec(name="predict_proba", datatype="FP64", shape=(-1, 3)),
    ),
)
WINE_COLUMNS = ("alcohol", "malic_acid", "ash")
WINE_SIGNATURE = Signature(
    inputs=tuple(TensorSpec(name=c, datatype="FP64", shape=(-1,)) for c in WINE_COLUMNS),
    outputs=(TensorSpec(name="predict", datatype="INT64", shape=(-1,)),),
)


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target)


@pytest.fixture(scope="session")
def iris_models(iris: tuple[np.ndarray, np.ndarray]) -> list[Any]:
    from sklearn.linear_model import LogisticRegression

    x, y = iris
    return [
        LogisticRegression(C=0.01, max_iter=2000).fit(x, y),
        LogisticRegression(max_iter=2000).fit(x, y),
    ]


@pytest.fixture(scope="session")
def wine() -> Any:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    return frame[list(WINE_COLUMNS)], frame["target"]


@pytest.fixture(scope="session")
def wine_model(wine: Any) -> Any:
    from sklearn.tree import DecisionTreeClassifier

    x, y = wine
    return DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y)


@pytest.fixture(scope="session")
def alcohol_model(wine: Any) -> Any:
    from sklearn.linear_model import LogisticRegression

    x, y = wine
    return LogisticRegression(max_iter=2000).fit(x[["alcohol"]], y)


# The registry's convention (registry/signature.py): a frame is one 1-D tensor per column;
# predict's result is output-0, predict_proba's is predict_proba.
ALCOHOL_SIGNATURE = Signature(
    inputs=(TensorSpec(name="alcohol", datatype="FP64", shape=(-1,)),),
    outputs=(
        TensorSpec(name="output-0", datatype="INT64", shape=(-1,)),
        TensorSpec(name="predict_proba", datatype="FP64", shape=(-1, 3)),
    ),
)


@pytest.fixture(scope="session")
def make_source(
    iris_models: list[Any], wine_model: Any, alcohol_model: Any
) -> Callable[[], MemorySource]:
    def make() -> MemorySource:
        source = MemorySource()
        source.add("iris", iris_models[0], signature=IRIS_SIGNATURE, aliases=("staging",))
        source.add("iris", iris_models[1], signature=IRIS_SIGNATURE, aliases=("production",))
        source.add("wine", wine_model, signature=WINE_SIGNATURE)
        source.add("double", double)
        source.add("echo", echo)
        source.add(
            "stats",
            split_stats,
            signature=Signature(
                inputs=(
                    TensorSpec(name="x", datatype="INT64", shape=(-1,)),
                    TensorSpec(name="y", datatype="INT64", shape=(-1,)),
                ),
                outputs=(),
            ),
        )
        source.add("broken", broken)
        source.add("nosig", iris_models[1])
        source.add("alcohol", alcohol_model, signature=ALCOHOL_SIGNATURE)
        return source

    return make


SERVED = ["iris@production", "wine", "double", "echo", "stats", "broken", "nosig", "alcohol"]


@pytest.fixture(scope="module")
def served(make_source: Callable[[], MemorySource]) -> Iterator[tuple[str, MemorySource]]:
    """A real server on a free loopback port serving SERVED; yields (base URL, source)."""
    from cellpipe.serving import start_server

    source = make_source()
    with start_server(SERVED, source) as running:
        with httpx.Client(base_url=running.url, timeout=10) as client:
            for _ in range(200):
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            else:
                pytest.fail("the server never became ready")
        yield running.url, source


@pytest.fixture
def client(served: tuple[str, MemorySource]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0], timeout=30) as http:
        yield http
