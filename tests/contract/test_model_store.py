"""One suite, every model store: versions, aliases, their history and the error messages.

Memory, SQLite and PostgreSQL (a server the tests start; each test gets a new database) must
answer alike. Version numbers are allocated under concurrency: processes registering the same
model at once get 1, 2, ... with no gap, duplicate or crash.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend_services import METADATA_BACKENDS, metadata_backend_params
from cellpipe.errors import ModelNotFoundError, RegistryError
from cellpipe.registry.model import ModelVersion, Signature, TensorSpec
from cellpipe.registry.store import model_store_for
from cellpipe.storage.backends import open_metadata_store
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import ArtifactRef

BACKENDS = METADATA_BACKENDS

T0 = datetime(2026, 1, 14, 9, 12, tzinfo=UTC)
SIG = Signature(
    inputs=(TensorSpec(name="input-0", datatype="FP64", shape=(-1, 13)),),
    outputs=(TensorSpec(name="output-0", datatype="INT64", shape=(-1,)),),
)


@pytest.fixture(params=metadata_backend_params())
def metadata(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened = BACKENDS[request.param][0](request, tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def store(metadata: Any) -> Any:
    return model_store_for(metadata)


def ref(n: int) -> ArtifactRef:
    return ArtifactRef(
        digest=ArtifactDigest(f"sha256:{n:064x}"), serializer="joblib", serializer_version=2,
        size=1000 + n, type_name="sklearn.ensemble.RandomForestClassifier",
    )  # fmt: skip


def draft(name: str = "wine", n: int = 1, **changes: Any) -> ModelVersion:
    base = ModelVersion(
        name=name, version=0, artifact=ref(n), created_at=T0 + timedelta(minutes=n),
        run_id="wine-20260114-091200-ab10", step="train_forest", variable="forest",
        parameters={"MAX_DEPTH": 4, "LABEL": "wine"}, metrics={"forest_acc": 0.9333},
        signature=SIG, description=f"forest {n}",
    )  # fmt: skip
    return replace(base, **changes)


def test_versions_are_numbered_per_name_and_read_back(store: Any) -> None:
    first = store.add_version(draft(n=1), model_description="wine classifier")
    second = store.add_version(draft(n=2, run_id=None, step=None, variable=None))
    other = store.add_version(draft("iris", n=3))
    assert (first.version, second.version, other.version) == (1, 2, 1)
    got = store.get_version("wine", 1)
    assert got == first
    assert got.artifact == ref(1)
    assert got.created_at == T0 + timedelta(minutes=1)
    assert (got.run_id, got.step, got.variable) == (
        "wine-20260114-091200-ab10", "train_forest", "forest",
    )  # fmt: skip
    assert dict(got.parameters) == {"MAX_DEPTH": 4, "LABEL": "wine"}
    assert dict(got.metrics) == {"forest_acc": 0.9333}
    assert got.signature == SIG
    assert store.get_version("wine", 2).run_id is None
    assert store.latest_version("wine").version == 2
    assert [v.version for v in store.versions("wine")] == [1, 2]
    assert store.versions("nope") == []
    listed = store.list_models()
    assert [(m.name, m.latest, m.version_count) for m in listed] == [("iris", 1, 1),
                                                                     ("wine", 2, 2)]  # fmt: skip
    assert listed[1].description == "wine classifier"
    assert listed[1].created_at == T0 + timedelta(minutes=1)


def test_a_version_without_signature_or_json_values(store: Any) -> None:
    v = store.add_version(draft(signature=None, parameters={}, metrics={}))
    got = store.get_version("wine", v.version)
    assert got.signature is None
    assert dict(got.parameters) == {}


def test_parameters_must_be_json(store: Any) -> None:
    with pytest.raises(RegistryError, match="parameters of a model version must be JSON"):
        store.add_version(draft(parameters={"f": object()}))
    assert store.versions("wine") == []


def test_aliases_move_and_every_move_is_recorded(store: Any) -> None:
    for n in (1, 2, 3):
        store.add_version(draft(n=n))
    t = T0 + timedelta(hours=1)
    first = store.move_alias("wine", "production", 1, at=t)
    assert (first.version, first.previous) == (1, None)
    store.move_alias("wine", "staging", 3, at=t + timedelta(seconds=1))
    moved = store.move_alias("wine", "production", 2, at=t + timedelta(seconds=2))
    assert (moved.version, moved.previous) == (2, 1)
    assert store.alias_version("wine", "production").version == 2
    assert store.get_version("wine", 2).aliases == ("production",)
    assert store.get_version("wine", 1).aliases == ()
    assert [v.aliases for v in store.versions("wine")] == [(), ("production",), ("staging",)]
    assert dict(store.list_models()[0].aliases) == {"production": 2, "staging": 3}
    removed = store.move_alias("wine", "staging", None, at=t + timedelta(seconds=3))
    assert (removed.version, removed.previous) == (None, 3)
    history = store.alias_history("wine")
    assert [(m.alias, m.previous, m.version) for m in history] == [
        ("production", None, 1),
        ("staging", None, 3),
        ("production", 1, 2),
        ("staging", 3, None),
    ]
    assert history[0].moved_at == t
    assert dict(store.list_models()[0].aliases) == {"production": 2}


def test_error_messages_say_what_exists(store: Any) -> None:
    store.add_version(draft(n=1))
    store.add_version(draft(n=2))
    store.move_alias("wine", "production", 1, at=T0)
    with pytest.raises(ModelNotFoundError, match=r"model 'wine' has no version 7; versions: 1, 2"):
        store.get_version("wine", 7)
    with pytest.raises(
        ModelNotFoundError, match=r"no alias 'prod' on model 'wine'; aliases: production"
    ):
        store.alias_version("wine", "prod")
    with pytest.raises(ModelNotFoundError, match="no model 'wien' in the registry") as err:
        store.latest_version("wien")
    assert "did you mean 'wine'?" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="model 'wine' has no version 3"):
        store.move_alias("wine", "staging", 3, at=T0)
    with pytest.raises(ModelNotFoundError, match="no alias 'staging' on model 'wine'"):
        store.move_alias("wine", "staging", None, at=T0)
    with pytest.raises(ModelNotFoundError, match="no model 'iris'"):
        store.move_alias("iris", "staging", 1, at=T0)
    with pytest.raises(ModelNotFoundError, match="no model 'iris'"):
        store.alias_history("iris")
    assert len(store.alias_history("wine")) == 1  # failed moves are not recorded


def test_long_version_lists_are_shortened(store: Any) -> None:
    for n in range(1, 8):
        store.add_version(draft(n=n))
    with pytest.raises(ModelNotFoundError, match="versions: 1-7"):
        store.get_version("wine", 9)


def test_same_bytes_registered_twice_are_two_versions(store: Any) -> None:
    a = store.add_version(draft(n=5))
    b = store.add_version(draft(n=5))
    assert (a.version, b.version) == (1, 2)
    assert a.artifact == b.artifact


# -- concurrency --------------------------------------------------------------------------------


def _register_many(url: str, count: int, start: Any) -> list[int]:
    start.wait()
    metadata = open_metadata_store(url)
    try:
        store = model_store_for(metadata)
        return [store.add_version(draft(n=i + 1)).version for i in range(count)]
    finally:
        metadata.close()


def _worker(url: str, count: int, start: Any, results: Any) -> None:
    results.put(_register_many(url, count, start))


def _concurrent_numbers(url: str) -> list[int]:
    open_metadata_store(url).close()  # migrate once, so the race is on the versions
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    results = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(url, 5, start, results)) for _ in range(2)]
    for w in workers:
        w.start()
    start.set()
    got = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    return sorted(n for part in got for n in part)


@pytest.mark.slow
def test_two_processes_registering_at_once_get_distinct_numbers_sqlite(tmp_path: Path) -> None:
    assert _concurrent_numbers(f"sqlite:///{tmp_path / 'cellpipe.db'}") == list(range(1, 11))


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_registering_at_once_get_distinct_numbers_postgresql(
    postgres_url: str,
) -> None:
    assert _concurrent_numbers(postgres_url) == list(range(1, 11))
