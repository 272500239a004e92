"""`ModelTable` follows alias moves and new versions (item 10), over a real SQLite registry.

Two `ModelRegistry` objects open the same project database, as the server and the
``cellpipe models`` command would: one registers and moves aliases, the other is what the
table resolves and loads from. Polling passes are run with `ModelTable.refresh` (no timing);
the thread of `start_following` is tested under concurrent requests with generous deadlines.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cellpipe.errors import ServingError
from cellpipe.registry.model import ModelRef, ModelVersion
from cellpipe.registry.registry import ModelRegistry
from cellpipe.serving import table as table_module
from cellpipe.serving.protocol import infer
from cellpipe.serving.table import ModelTable, Switch
from cellpipe.serving.tensors import RequestError
from cellpipe.storage.artifacts import LocalArtifactStore
from cellpipe.storage.metadata import SqlMetadataStore


class Counting:
    """A ModelSource over a registry that counts loads (and can be made to fail resolving)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.loads: list[str] = []
        self.unreachable = False

    def resolve(self, ref: str | ModelRef) -> ModelVersion:
        if self.unreachable:
            raise OSError("database is locked")
        return self.registry.resolve(ref)

    def versions(self, name: str) -> list[ModelVersion]:
        return self.registry.versions(name)

    def load(self, version: ModelVersion) -> Any:
        self.loads.append(version.ref)
        return self.registry.load(version)


def _open(folder: Path) -> ModelRegistry:
    metadata = SqlMetadataStore(f"sqlite:///{folder / 'cellpipe.db'}")
    return ModelRegistry(metadata, LocalArtifactStore(folder / "artifacts"))


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[ModelRegistry, Counting, Counting]]:
    """(writer, source, poller): three connections to one SQLite project."""
    opened = [_open(tmp_path) for _ in range(3)]
    try:
        yield opened[0], Counting(opened[1]), Counting(opened[2])
    finally:
        for registry in opened:
            registry.metadata.close()


@pytest.fixture
def iris_project(
    stores: tuple[ModelRegistry, Counting, Counting], iris_models: list[Any]
) -> tuple[ModelRegistry, Counting, Counting]:
    writer = stores[0]
    writer.register(iris_models[0], "iris", alias="production")
    writer.register(iris_models[1], "iris")
    return stores


def test_item10_an_alias_move_is_followed(
    iris_project: tuple[ModelRegistry, Counting, Counting], caplog: pytest.LogCaptureFixture
) -> None:
    writer, source, poller = iris_project
    table = ModelTable.resolve(["iris@production"], source)
    seen: list[Switch] = []
    assert table.refresh(poller, on_switch=seen.append) == []

    writer.set_alias("iris", "production", 2)
    with caplog.at_level(logging.INFO, logger="cellpipe.serving"):
        switches = table.refresh(poller, on_switch=seen.append)

    [switch] = switches
    assert (switch.name, switch.ref, switch.previous, switch.version) == (
        "iris",
        "iris@production",
        1,
        2,
    )
    assert seen == table.switches == [switch]
    assert table.get("iris").version.version == 2
    assert table.get("iris", "2") is table.get("iris")
    assert table.version_names("iris") == ["2"]
    assert table.readiness("iris") == (True, None)
    assert poller.loads == ["iris:2"]  # loaded by the polling source, not the request one
    [record] = [r for r in caplog.records if r.name == "cellpipe.serving"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == "iris@production moved from version 1 to 2: now serving iris:2"
    assert table.refresh(poller) == []  # nothing moved since


def test_item10_a_name_follows_new_registrations_and_a_pinned_version_does_not(
    iris_project: tuple[ModelRegistry, Counting, Counting], iris_models: list[Any]
) -> None:
    writer, source, poller = iris_project
    newest = ModelTable.resolve(["iris"], source)
    pinned = ModelTable.resolve(["iris:2"], source)

    writer.register(iris_models[0], "iris")
    pinned.start_following(poller)  # nothing to follow: no thread

    assert [s.version for s in newest.refresh(poller)] == [3]
    assert newest.get("iris").version.version == 3
    assert pinned.refresh(poller) == []
    assert not pinned.following
    assert pinned.get("iris").version.version == 2


def test_item10_a_version_that_cannot_be_loaded_keeps_the_old_one_without_flapping(
    iris_project: tuple[ModelRegistry, Counting, Counting],
    iris_models: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer, source, poller = iris_project
    now = [1000.0]
    monkeypatch.setattr(table_module, "_clock", lambda: now[0])
    writer.register({"weights": [1, 2]}, "iris")  # version 3: no predict, not callable
    table = ModelTable.resolve(["iris@production"], source)

    writer.set_alias("iris", "production", 3)
    first = table.refresh(poller)
    ready, reason = table.readiness("iris")
    again = table.refresh(poller)  # within the retry delay: not loaded again

    assert first == again == []
    assert table.get("iris").version.version == 1
    assert ready is True
    assert reason is not None
    assert reason.startswith("iris@production names version 3, which cannot be served: ")
    assert reason.endswith("; still serving version 1")
    assert table.metadata("iris")["properties"] == {"ready": "true", "reason": reason}
    assert poller.loads == ["iris:3"]

    now[0] += 2.5  # past the first retry delay (2 s): one more try, then 4 s
    assert table.refresh(poller) == []
    assert table.refresh(poller) == []
    assert poller.loads == ["iris:3", "iris:3"]

    writer.set_alias("iris", "production", 1)  # moved back: the problem is gone
    assert table.refresh(poller) == []
    assert table.readiness("iris") == (True, None)
    assert "properties" not in table.metadata("iris")

    writer.set_alias("iris", "production", 2)
    assert [s.version for s in table.refresh(poller)] == [2]
    assert table.readiness("iris") == (True, None)


def test_item10_a_registry_that_cannot_be_reached_or_a_removed_alias_keeps_serving(
    iris_project: tuple[ModelRegistry, Counting, Counting],
) -> None:
    writer, source, poller = iris_project
    table = ModelTable.resolve(["iris@production"], source)

    poller.unreachable = True
    assert table.refresh(poller) == []
    unreachable = table.readiness("iris")
    poller.unreachable = False
    writer.remove_alias("iris", "production")
    assert table.refresh(poller) == []
    removed = table.readiness("iris")

    assert unreachable == (
        True,
        "cannot resolve iris@production: OSError: database is locked; still serving version 1",
    )
    assert removed[0] is True
    assert removed[1] is not None
    assert removed[1].startswith("cannot resolve iris@production: ")
    assert table.get("iris").version.version == 1


def test_item10_with_all_versions_the_previous_version_stays_reachable(
    iris_project: tuple[ModelRegistry, Counting, Counting],
) -> None:
    writer, source, poller = iris_project
    table = ModelTable.resolve(["iris@production"], source, all_versions=True)
    before = table.get("iris")

    writer.set_alias("iris", "production", 2)
    table.refresh(poller)

    assert table.get("iris", "1") is before
    assert table.get("iris").version.version == 2
    assert source.loads == ["iris:1"]


def _request(rows: np.ndarray) -> bytes:
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64"}
    return json.dumps({"inputs": [{**tensor, "data": rows.ravel().tolist()}]}).encode()


def test_item10_a_move_under_concurrent_requests_is_atomic(
    iris_project: tuple[ModelRegistry, Counting, Counting],
    iris: tuple[np.ndarray, np.ndarray],
    iris_models: list[Any],
) -> None:
    writer, source, poller = iris_project
    rows = iris[0]
    expected = {str(n + 1): m.predict(rows).tolist() for n, m in enumerate(iris_models)}
    assert expected["1"] != expected["2"]
    body = _request(rows)
    table = ModelTable.resolve(["iris@production"], source)
    stop = threading.Event()
    failures: list[str] = []
    seen: list[list[str]] = [[] for _ in range(4)]

    def hammer(mine: list[str]) -> None:
        try:
            while not stop.is_set():
                answer = json.loads(infer(table.get("iris"), body)[0])
                version = answer["model_version"]
                if answer["outputs"][0]["data"] != expected[version]:
                    failures.append(f"version {version} answered with another's predictions")
                mine.append(version)
        except Exception as exc:  # reported below, not lost in the thread
            failures.append(repr(exc))

    threads = [threading.Thread(target=hammer, args=(mine,)) for mine in seen]
    switched: list[Switch] = []
    table.start_following(poller, interval=0.01, on_switch=switched.append)
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while not all(mine for mine in seen) and time.monotonic() < deadline:
            time.sleep(0.01)
        writer.set_alias("iris", "production", 2)
        while not (switched and all(mine[-1:] == ["2"] for mine in seen)):
            assert time.monotonic() < deadline, "the move was not followed within 60 s"
            assert not failures, failures
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        table.stop_following()

    assert not failures, failures
    assert not table.following
    assert not any(t.name == "cellpipe-follow" for t in threading.enumerate())
    assert [(s.previous, s.version) for s in switched] == [(1, 2)]
    for mine in seen:  # each thread saw 1s, then only 2s: never back to the old version
        assert mine[0] == "1"
        assert mine == sorted(mine)


def test_start_following_twice_or_with_a_bad_interval_is_refused(
    iris_project: tuple[ModelRegistry, Counting, Counting],
) -> None:
    _, source, poller = iris_project
    table = ModelTable.resolve(["iris"], source)
    with pytest.raises(ServingError, match="interval must be positive"):
        table.start_following(poller, interval=0)
    table.start_following(poller, interval=30)
    try:
        assert table.following
        with pytest.raises(ServingError, match="already following"):
            table.start_following(poller)
    finally:
        table.stop_following()
    assert not table.following
    table.stop_following()  # idempotent


def test_item8_an_archived_version_is_exposed_but_not_served(
    iris_project: tuple[ModelRegistry, Counting, Counting],
) -> None:
    writer, source, _ = iris_project
    writer.archive("iris", 2)
    table = ModelTable.resolve(["iris@production"], source, all_versions=True)

    ready, reason = table.readiness("iris", "2")

    assert ready is False
    assert reason == (
        "version 2 of model 'iris' is archived (unarchive it to serve it, or serve iris:2 "
        "explicitly)"
    )
    with pytest.raises(RequestError) as caught:
        table.get("iris", "2")
    assert (caught.value.status, caught.value.message) == (503, reason)
    assert table.metadata("iris", "2")["properties"] == {"ready": "false", "reason": reason}
    assert table.version_names("iris") == ["1"]
    assert source.loads == ["iris:1"]
    assert ModelTable.resolve(["iris:2"], source).get("iris").version.archived  # asked for


def test_item10_archiving_the_newest_version_moves_name_back(
    iris_project: tuple[ModelRegistry, Counting, Counting],
) -> None:
    writer, source, poller = iris_project
    table = ModelTable.resolve(["iris"], source)

    writer.archive("iris", 2)

    assert [(s.previous, s.version) for s in table.refresh(poller)] == [(2, 1)]
    assert table.get("iris").version.version == 1
