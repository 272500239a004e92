"""`ModelRegistry` on memory stores: register, resolve every reference form, load, aliases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cellpipe.errors import ModelNotFoundError, RegistryError, SerializationError
from cellpipe.registry.registry import ModelRegistry
from cellpipe.storage.artifacts import MemoryArtifactStore
from cellpipe.storage.metadata import MemoryMetadataStore
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import ArtifactRef


class Scale:
    """A tiny model: multiplies its input (cloudpickled: defined in a test module)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, x: Any) -> Any:
        return np.asarray(x, dtype=np.float64) * self.factor


@pytest.fixture
def registry() -> ModelRegistry:
    return ModelRegistry(MemoryMetadataStore(), MemoryArtifactStore())


def test_register_resolve_and_load(registry: ModelRegistry) -> None:
    v1 = registry.register({"weights": [1, 2]}, "wine", description="first")
    v2 = registry.register(
        Scale(2.0), "wine", input_example=np.ones((5, 3)), alias="staging",
        parameters={"MAX_DEPTH": 4}, metrics={"acc": np.float64(0.9)},
    )  # fmt: skip
    assert (v1.ref, v2.ref) == ("wine:1", "wine:2")
    assert v1.artifact.serializer == "json"
    assert v1.signature is None
    assert v2.aliases == ("staging",)
    assert v2.signature is not None
    assert [t.shape for t in v2.signature.inputs] == [(-1, 3)]
    assert dict(v2.metrics) == {"acc": 0.9}
    for ref in ("wine", "wine@latest", "wine:2", "wine@staging"):
        assert registry.resolve(ref).version == 2
    assert registry.resolve("wine:1").description == "first"
    assert registry.load(registry.resolve("wine:1")) == {"weights": [1, 2]}
    loaded = registry.load(registry.resolve("wine@staging"))
    assert loaded.predict([1.0]).tolist() == [2.0]
    assert [v.version for v in registry.versions("wine")] == [1, 2]
    [summary] = registry.list_models()
    assert (summary.name, summary.latest, summary.version_count, summary.description) == (
        "wine", 2, 2, "first",
    )  # fmt: skip


def test_aliases_and_their_history(registry: ModelRegistry) -> None:
    registry.register(1, "m")
    registry.register(2, "m")
    registry.set_alias("m", "production", 1)
    registry.set_alias("m", "production", 2)
    registry.remove_alias("m", "production")
    assert [(h.previous, h.version) for h in registry.alias_history("m")] == [
        (None, 1), (1, 2), (2, None),
    ]  # fmt: skip
    with pytest.raises(ModelNotFoundError, match="no alias 'production' on model 'm'"):
        registry.resolve("m@production")
    with pytest.raises(RegistryError, match="'latest' is reserved"):
        registry.set_alias("m", "latest", 1)


def test_nothing_is_stored_for_an_invalid_name_or_alias(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="invalid model name 'a b'"):
        registry.register(1, "a b")
    with pytest.raises(RegistryError, match="invalid alias '9'"):
        registry.register(1, "m", alias="9")
    assert registry.list_models() == []


def test_unstorable_objects_name_the_model(registry: ModelRegistry, tmp_path: Any) -> None:
    with (tmp_path / "f").open("w") as f, pytest.raises(SerializationError, match="output 'm'"):
        registry.register(f, "m")


def test_register_artifact_reuses_the_stored_bytes(registry: ModelRegistry) -> None:
    first = registry.register(Scale(3.0), "m", input_example=[[1.0, 2.0]])
    again = registry.register_artifact(first.artifact, "copy", run_id="r1", step="s",
                                       variable="model", input_example=[[1.0, 2.0]])  # fmt: skip
    assert again.artifact == first.artifact
    assert again.signature == first.signature
    assert (again.run_id, again.step, again.variable) == ("r1", "s", "model")
    missing = ArtifactRef(
        digest=ArtifactDigest("sha256:" + "0" * 64), serializer="json", serializer_version=1,
        size=1, type_name="int",
    )  # fmt: skip
    with pytest.raises(RegistryError, match="the artifact store does not have these bytes"):
        registry.register_artifact(missing, "m")


def test_unknown_models_point_at_what_exists(registry: ModelRegistry) -> None:
    with pytest.raises(ModelNotFoundError, match="no model 'wine'") as empty:
        registry.resolve("wine")
    assert "register one first" in str(empty.value)
    registry.register(1, "wine")
    with pytest.raises(ModelNotFoundError, match="model 'wine' has no version 7; versions: 1"):
        registry.resolve("wine:7")
