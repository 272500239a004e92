"""Issue 13, the registry half: what a version needs, its input example, copies, its life.

`ModelRegistry` on memory stores (the store contract tests cover SQLite and PostgreSQL).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cellpipe.errors import ModelNotFoundError, RegistryError
from cellpipe.registry.packages import distribution_of, needed_packages, object_modules
from cellpipe.registry.registry import ModelRegistry
from cellpipe.registry.signature import EXAMPLE_ROWS, example_inputs
from cellpipe.storage.artifacts import MemoryArtifactStore
from cellpipe.storage.metadata import MemoryMetadataStore


@pytest.fixture
def registry() -> ModelRegistry:
    return ModelRegistry(MemoryMetadataStore(), MemoryArtifactStore())


@pytest.fixture(scope="module")
def fitted() -> Any:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(40, 3)), columns=["alcohol", "ash", "hue"])
    y = (x["alcohol"] > 0).astype(int)
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), x


def _installed(distribution: str) -> str:
    return importlib.metadata.version(distribution)


# -- packages --------------------------------------------------------------------------------


def test_item13_packages_of_a_scikit_learn_model_are_its_distributions_and_deps(
    fitted: Any,
) -> None:
    model, _ = fitted
    assert {"sklearn", "numpy"} <= object_modules(model)  # the pipeline's steps are walked
    packages = needed_packages(model, serializer="joblib")
    for distribution in ("scikit-learn", "numpy", "scipy", "joblib"):
        assert packages[distribution] == _installed(distribution)
    assert "pandas" not in packages  # fitted on a frame, but made of no pandas object
    assert "pytest" not in packages


def test_item13_a_bound_method_counts_as_its_object(fitted: Any) -> None:
    model, _ = fitted
    assert "scikit-learn" in needed_packages(model.predict, serializer="cloudpickle")


def test_item13_an_object_naming_no_package_falls_back_to_the_run_list() -> None:
    def predict(x: Any) -> Any:  # defined here: its module is this test module, not a package
        return x

    predict.__module__ = "__main__"  # as a function defined in a notebook
    packages = needed_packages(predict, serializer="cloudpickle", fallback=["pandas"])
    assert packages["pandas"] == _installed("pandas")
    assert packages["numpy"] == _installed("numpy")  # pandas' own requirement
    assert packages["cloudpickle"] == _installed("cloudpickle")
    assert needed_packages(predict) == {}  # nothing known, nothing guessed


def test_item13_distribution_names_differ_from_module_names() -> None:
    assert distribution_of("sklearn") == "scikit-learn"
    assert distribution_of("numpy") == "numpy"
    assert distribution_of("no_such_module_here") is None


# -- input example -----------------------------------------------------------------------------


def test_item13_a_frame_example_is_one_tensor_per_column_first_rows(fitted: Any) -> None:
    _, x = fitted
    inputs = example_inputs(x)
    assert inputs is not None
    assert [(t["name"], t["datatype"], t["shape"]) for t in inputs] == [
        ("alcohol", "FP64", [EXAMPLE_ROWS]),
        ("ash", "FP64", [EXAMPLE_ROWS]),
        ("hue", "FP64", [EXAMPLE_ROWS]),
    ]
    assert inputs[0]["data"] == x["alcohol"].iloc[:EXAMPLE_ROWS].tolist()


def test_item13_an_array_example_is_row_major_with_its_real_shape() -> None:
    inputs = example_inputs(np.arange(24, dtype=np.int32).reshape(8, 3))
    assert inputs == [
        {"name": "input-0", "datatype": "INT32", "shape": [5, 3], "data": list(range(15))}
    ]
    strings = example_inputs(pd.DataFrame({"colour": ["red", "blue"], "n": [1.0, 2.0]}))
    assert strings is not None
    assert strings[0] == {
        "name": "colour",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["red", "blue"],
    }


@pytest.mark.parametrize(
    "example",
    [
        np.array([[1.0, np.nan]]),
        np.array([[np.inf, 1.0]]),
        np.zeros((5, 100_000)),  # wider than the stored example's bound
        object(),
    ],
    ids=["nan", "infinity", "too-large", "unknown-type"],
)
def test_item13_examples_json_cannot_carry_are_not_stored(example: Any) -> None:
    assert example_inputs(example) is None


# -- registering, copying ------------------------------------------------------------------------


def test_item13_a_registered_version_records_packages_example_and_tags(
    registry: ModelRegistry, fitted: Any
) -> None:
    model, x = fitted
    v = registry.register(model, "wine", input_example=x, tags={"team": "ml"})
    got = registry.resolve("wine:1")
    assert got == v
    assert got.packages["scikit-learn"] == _installed("scikit-learn")
    assert got.input_example == example_inputs(x)
    assert dict(got.tags) == {"team": "ml"}
    without = registry.register(model, "wine", packages={"scikit-learn": "1.0"})
    assert dict(without.packages) == {"scikit-learn": "1.0"}  # given packages win
    assert without.input_example is None
    with pytest.raises(RegistryError, match="invalid tag key"):
        registry.register(model, "wine", tags={"no spaces": "x"})
    assert [v.version for v in registry.versions("wine")] == [1, 2]  # nothing stored


def test_item13_copy_version_keeps_everything_but_aliases(
    registry: ModelRegistry, fitted: Any
) -> None:
    model, x = fitted
    registry.register(model, "wine")
    source = registry.register(
        model, "wine", input_example=x, description="v2", tags={"team": "ml"}, alias="production",
        run_id="wine-20260114-091200-ab10", step="train", variable="model",
        parameters={"C": 1.0}, metrics={"acc": 0.9},
    )  # fmt: skip
    target = ModelRegistry(MemoryMetadataStore(), MemoryArtifactStore())
    copy = target.copy_version(source, registry)
    assert copy.version == 2
    assert copy.aliases == ()
    assert copy.artifact.digest == source.artifact.digest  # same bytes, same address
    for field in ("run_id", "step", "variable", "parameters", "metrics", "signature",
                  "packages", "tags", "description", "input_example", "created_at"):  # fmt: skip
        assert getattr(copy, field) == getattr(source, field), field
    assert target.resolve("wine") == copy
    assert target.list_models()[0].description == "v2"
    loaded = target.load(copy)
    assert (loaded.predict(x[:3]) == model.predict(x[:3])).all()
    with pytest.raises(RegistryError, match="already has version 2"):
        target.copy_version(source, registry)


def test_item13_copy_of_an_archived_version_is_not_archived(
    registry: ModelRegistry, fitted: Any
) -> None:
    model, _ = fitted
    registry.register(model, "wine")
    archived = registry.archive("wine", 1)
    target = ModelRegistry(MemoryMetadataStore(), MemoryArtifactStore())
    assert not target.copy_version(archived, registry).archived


# -- a version's life through the registry -------------------------------------------------------


def test_item13_archive_unarchive_delete_tag_describe(registry: ModelRegistry) -> None:
    for n in (1, 2, 3):
        registry.register({"n": n}, "wine")
    registry.set_alias("wine", "production", 1)
    assert registry.archive("wine", 3).archived
    assert registry.resolve("wine").version == 2
    assert registry.resolve("wine@latest").version == 2
    assert registry.load(registry.resolve("wine:3")) == {"n": 3}  # still loadable
    assert [v.archived for v in registry.versions("wine")] == [False, False, True]
    with pytest.raises(RegistryError, match="it is archived"):
        registry.set_alias("wine", "staging", 3)
    assert not registry.unarchive("wine", 3).archived
    deleted = registry.delete_version("wine", 2)
    assert deleted.version == 2
    assert registry.artifacts.exists(deleted.artifact.digest)  # the bytes stay
    with pytest.raises(ModelNotFoundError, match="deleted"):
        registry.resolve("wine:2")
    assert registry.register({"n": 4}, "wine").version == 4
    assert dict(registry.set_tags("wine", 1, {"a": "1", "b": "2"}, ()).tags) == {"a": "1", "b": "2"}
    assert dict(registry.set_tags("wine", 1, {}, ["a"]).tags) == {"b": "2"}
    described = registry.describe("wine", 1, "the first")
    assert described is not None
    assert described.description == "the first"
    assert registry.describe("wine", None, "the model") is None
    assert registry.list_models()[0].description == "the model"
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.archive("bad name", 1)
