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


# -- issue 13: archive, delete, tags, descriptions, packages, input example, copies ---------------

NOW = T0 + timedelta(days=1)
EXAMPLE = [{"name": "input-0", "datatype": "FP64", "shape": [1, 2], "data": [1.5, 2.0]}]


def test_item13_new_fields_are_stored_and_read_back(store: Any) -> None:
    packages = {"scikit-learn": "1.5.2", "numpy": "2.1.3"}
    added = store.add_version(
        draft(tags={"team": "ml"}, packages=packages, input_example=EXAMPLE, archived=True)
    )
    got = store.get_version("wine", 1)
    assert got == added
    assert dict(got.tags) == {"team": "ml"}
    assert dict(got.packages) == packages
    assert list(got.packages) == ["numpy", "scikit-learn"]  # sorted
    assert got.input_example == EXAMPLE
    assert got.archived is False  # a new version is never archived


def test_item13_bad_new_fields_store_nothing(store: Any) -> None:
    with pytest.raises(RegistryError, match="invalid tag key '1x'"):
        store.add_version(draft(tags={"1x": "a"}))
    with pytest.raises(RegistryError, match="input example of a model version must be plain"):
        store.add_version(draft(input_example=[{"data": [float("nan")]}]))
    with pytest.raises(RegistryError, match="packages of a model version"):
        store.add_version(draft(packages={"numpy": 2}))
    assert store.versions("wine") == []


def test_item13_archived_versions_are_skipped_by_latest_and_stay_readable(store: Any) -> None:
    for n in (1, 2, 3):
        store.add_version(draft(n=n))
    archived = store.set_archived("wine", 3, True, at=NOW)
    assert archived.archived
    assert archived.version == 3
    assert store.latest_version("wine").version == 2
    assert store.get_version("wine", 3).archived  # NAME:N still reads it
    assert [v.archived for v in store.versions("wine")] == [False, False, True]
    [summary] = store.list_models()
    assert (summary.latest, summary.version_count, summary.archived_count) == (2, 2, 1)
    assert summary.to_json()["archived"] == 1
    assert store.set_archived("wine", 3, True, at=NOW).archived  # again: no change, no error
    assert not store.set_archived("wine", 3, False, at=NOW).archived
    assert store.latest_version("wine").version == 3


def test_item13_every_version_archived_names_none_and_says_how(store: Any) -> None:
    store.add_version(draft(n=1))
    store.add_version(draft(n=2))
    store.set_archived("wine", 1, True, at=NOW)
    store.set_archived("wine", 2, True, at=NOW)
    with pytest.raises(ModelNotFoundError, match=r"every version of model 'wine' is archived") as e:
        store.latest_version("wine")
    assert "cellpipe models unarchive wine:2" in str(e.value)
    [summary] = store.list_models()
    assert (summary.latest, summary.version_count, summary.archived_count) == (None, 0, 2)


def test_item13_an_archived_version_cannot_get_an_alias(store: Any) -> None:
    store.add_version(draft(n=1))
    store.add_version(draft(n=2))
    store.move_alias("wine", "production", 1, at=T0)
    store.set_archived("wine", 2, True, at=NOW)
    with pytest.raises(RegistryError, match=r"cannot point wine@production at version 2: it is ar"):
        store.move_alias("wine", "production", 2, at=NOW)
    assert store.alias_version("wine", "production").version == 1
    assert len(store.alias_history("wine")) == 1  # the refused move is not recorded
    store.move_alias("wine", "production", None, at=NOW)  # removing an alias is always fine


def test_item13_an_aliased_version_cannot_be_archived_or_deleted(store: Any) -> None:
    store.add_version(draft(n=1))
    store.move_alias("wine", "production", 1, at=T0)
    store.move_alias("wine", "staging", 1, at=T0)
    for action, call in (
        ("archive", lambda: store.set_archived("wine", 1, True, at=NOW)),
        ("delete", lambda: store.delete_version("wine", 1, at=NOW)),
    ):
        with pytest.raises(RegistryError) as err:
            call()
        message = str(err.value)
        assert f"cannot {action} wine:1: the aliases production, staging point at it" in message
        assert "cellpipe models alias wine production VERSION" in message
        assert "--delete" in message
    got = store.get_version("wine", 1)
    assert (got.archived, got.aliases) == (False, ("production", "staging"))


def test_item13_deleted_numbers_are_never_given_again(store: Any) -> None:
    for n in (1, 2, 3):
        store.add_version(draft(n=n))
    store.move_alias("wine", "production", 3, at=T0)
    store.move_alias("wine", "production", 1, at=T0 + timedelta(seconds=1))
    deleted = store.delete_version("wine", 3, at=NOW)
    assert deleted.version == 3
    assert deleted.artifact == ref(3)
    assert [v.version for v in store.versions("wine")] == [1, 2]
    assert store.latest_version("wine").version == 2
    with pytest.raises(ModelNotFoundError, match=r"has no version 3 \(it was deleted 2026-01-15"):
        store.get_version("wine", 3)
    with pytest.raises(ModelNotFoundError, match=r"has no version 3 \(it was deleted"):
        store.delete_version("wine", 3, at=NOW)
    with pytest.raises(ModelNotFoundError, match="has no version 3"):
        store.move_alias("wine", "staging", 3, at=NOW)
    with pytest.raises(ModelNotFoundError, match="has no version 3"):
        store.set_tags("wine", 3, {"a": "b"})
    assert store.add_version(draft(n=4)).version == 4  # not 3 again
    history = store.alias_history("wine")  # the history still names version 3
    assert [(m.previous, m.version) for m in history] == [(None, 3), (3, 1)]
    [summary] = store.list_models()
    assert (summary.latest, summary.version_count) == (4, 3)


def test_item13_a_model_whose_versions_are_all_deleted_stays_listed(store: Any) -> None:
    store.add_version(draft(n=1), model_description="wine classifier")
    store.delete_version("wine", 1, at=NOW)
    with pytest.raises(ModelNotFoundError, match="has no versions left"):
        store.latest_version("wine")
    [summary] = store.list_models()
    assert (summary.name, summary.latest, summary.version_count) == ("wine", None, 0)
    assert store.add_version(draft(n=2)).version == 2


def test_item13_tags_are_set_and_removed_and_validated(store: Any) -> None:
    store.add_version(draft(n=1, tags={"team": "ml"}))
    got = store.set_tags("wine", 1, {"data.version": "v3", "team": "ds"})
    assert dict(got.tags) == {"data.version": "v3", "team": "ds"}
    got = store.set_tags("wine", 1, {}, ["team"])
    assert dict(got.tags) == {"data.version": "v3"}
    assert dict(store.get_version("wine", 1).tags) == {"data.version": "v3"}
    with pytest.raises(RegistryError, match=r"wine:1 has no tag 'team'; tags: data.version"):
        store.set_tags("wine", 1, {}, ["team"])
    with pytest.raises(RegistryError, match="invalid tag key 'a b'"):
        store.set_tags("wine", 1, {"a b": "x"})
    with pytest.raises(RegistryError, match="tag 'x' is both set and removed"):
        store.set_tags("wine", 1, {"x": "1"}, ["x"])
    with pytest.raises(RegistryError, match="at most 5000 are kept"):
        store.set_tags("wine", 1, {"x": "y" * 5001})
    with pytest.raises(RegistryError, match="control character"):
        store.set_tags("wine", 1, {"x": "a\x00b"})
    assert dict(store.get_version("wine", 1).tags) == {"data.version": "v3"}  # all refused


def test_item13_descriptions_are_edited(store: Any) -> None:
    store.add_version(draft(n=1), model_description="old")
    store.set_archived("wine", 1, True, at=NOW)  # archived versions can still be edited
    got = store.describe_version("wine", 1, "new text")
    assert (got.description, got.archived) == ("new text", True)
    assert store.get_version("wine", 1).description == "new text"
    store.describe_model("wine", "wine classifier, v2 data")
    assert store.list_models()[0].description == "wine classifier, v2 data"
    with pytest.raises(ModelNotFoundError, match="no model 'iris'"):
        store.describe_model("iris", "x")
    with pytest.raises(ModelNotFoundError, match="has no version 2"):
        store.describe_version("wine", 2, "x")


def test_item13_a_copy_keeps_its_number_once(store: Any) -> None:
    copied = store.add_version(replace(draft(n=1), version=7), keep_number=True)
    assert copied.version == 7
    assert [v.version for v in store.versions("wine")] == [7]
    assert store.add_version(draft(n=2)).version == 8
    with pytest.raises(
        RegistryError, match=r"cannot copy wine:7: model 'wine' already has version 8"
    ):
        store.add_version(replace(draft(n=1), version=7), keep_number=True)
    assert [v.version for v in store.versions("wine")] == [7, 8]


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


def _archive_and_alias(url: str, role: str, rounds: int, start: Any, results: Any) -> None:
    """Archive/unarchive version 2, or move production between 1 and 2, ``rounds`` times."""
    start.wait()
    metadata = open_metadata_store(url)
    done = refused = 0
    try:
        store = model_store_for(metadata)
        for i in range(rounds):
            at = datetime.now(UTC)
            try:
                if role == "archiver":
                    store.set_archived("wine", 2, i % 2 == 0, at=at)
                else:
                    store.move_alias("wine", "production", 2 if i % 2 == 0 else 1, at=at)
                done += 1
            except RegistryError:
                refused += 1
            if role == "checker":  # what any reader sees is consistent, at every step
                target = store.alias_version("wine", "production")
                assert not target.archived, target
    finally:
        metadata.close()
    results.put((role, done, refused))


def _archive_race(url: str) -> list[tuple[str, int, int]]:
    metadata = open_metadata_store(url)
    try:
        store = model_store_for(metadata)
        store.add_version(draft(n=1))
        store.add_version(draft(n=2))
        store.move_alias("wine", "production", 1, at=T0)
    finally:
        metadata.close()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_archive_and_alias, args=(url, role, 40, start, results))
        for role in ("archiver", "checker")
    ]
    for w in workers:
        w.start()
    start.set()
    got = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    metadata = open_metadata_store(url)
    try:
        store = model_store_for(metadata)
        target = store.alias_version("wine", "production")
        assert not target.archived  # an alias never ends on an archived version
        moves = store.alias_history("wine")
        assert all(m.version in (1, 2) for m in moves)
    finally:
        metadata.close()
    return sorted(got)


@pytest.mark.slow
def test_item13_archiving_and_moving_aliases_at_once_never_alias_an_archived_version_sqlite(
    tmp_path: Path,
) -> None:
    got = _archive_race(f"sqlite:///{tmp_path / 'cellpipe.db'}")
    assert [(role, done + refused) for role, done, refused in got] == [
        ("archiver", 40), ("checker", 40),
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.postgres
def test_item13_archiving_and_moving_aliases_at_once_never_alias_an_archived_version_pg(
    postgres_url: str,
) -> None:
    got = _archive_race(postgres_url)
    assert [(role, done + refused) for role, done, refused in got] == [
        ("archiver", 40), ("checker", 40),
    ]  # fmt: skip
