"""Lineage queries, snapshot and data-input records, and run filters, on every store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cellpipe.errors import CellpipeError
from cellpipe.storage.lineage import (
    DataInputRecord,
    HistoryStore,
    RunFilter,
    SnapshotKind,
    SnapshotRecord,
    artifact_lineage,
    history_for,
    run_lineage,
)
from cellpipe.storage.metadata import MemoryMetadataStore, SqlMetadataStore
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import (
    ArtifactRef,
    MetadataStore,
    RunRecord,
    RunStatus,
    StepRunRecord,
    StepStatus,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _digest(n: int) -> ArtifactDigest:
    return ArtifactDigest("sha256:" + f"{n:064x}")


def _ref(n: int) -> ArtifactRef:
    return ArtifactRef(
        digest=_digest(n), serializer="json", serializer_version=1, size=n, type_name="int"
    )


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path) -> Iterator[MetadataStore]:
    if request.param == "memory":
        yield MemoryMetadataStore()
        return
    sql = SqlMetadataStore(f"sqlite:///{tmp_path / 'cellpipe.db'}")
    yield sql
    sql.close()


def _run(store: MetadataStore, run_id: str, minutes: int, params=None, metrics=None) -> None:
    store.start_run(
        RunRecord(
            run_id=run_id,
            pipeline="p",
            notebook="/nb.ipynb",
            notebook_digest="sha256:" + "0" * 64,
            status=RunStatus.RUNNING,
            started_at=T0 + timedelta(minutes=minutes),
            parameters=params or {},
        )
    )
    store.finish_run(
        run_id,
        status=RunStatus.SUCCEEDED,
        finished_at=T0 + timedelta(minutes=minutes + 1),
        metrics=metrics or {},
    )


def _step(store, run_id, step, status, inputs=(), outputs=(), minutes=0, source=None):
    store.record_step_run(
        StepRunRecord(
            run_id=run_id,
            step=step,
            status=status,
            started_at=T0 + timedelta(minutes=minutes),
            finished_at=T0 + timedelta(minutes=minutes),
            inputs={f"v{n}": _ref(n) for n in inputs},
            outputs={f"v{n}": _ref(n) for n in outputs},
            source_run=source,
        )
    )


@pytest.fixture
def history(store) -> HistoryStore:
    found = history_for(store)
    assert found is not None
    return found


@pytest.fixture
def two_runs(store, history):
    """r1: a -> v1 -> b -> v2 (b also reads data v9); r2: a cached, b re-ran -> v3."""
    _run(store, "r1", 0, params={"LR": 0.1, "NAME": "x"}, metrics={"acc": 0.8})
    _step(store, "r1", "a", StepStatus.SUCCEEDED, outputs=[1])
    _step(store, "r1", "b", StepStatus.SUCCEEDED, inputs=[1], outputs=[2], minutes=1)
    history.record_data_inputs(
        [
            DataInputRecord(
                run_id="r1", step="b", url="https://x/d.csv", version="etag:1",
                digest=_digest(9), size=9, fetched_at=T0,
            )
        ]
    )  # fmt: skip
    _run(store, "r2", 10, params={"LR": 0.2, "NAME": "x"}, metrics={"acc": 0.95})
    _step(store, "r2", "a", StepStatus.CACHED, outputs=[1], minutes=10, source="r1")
    _step(store, "r2", "b", StepStatus.SUCCEEDED, inputs=[1], outputs=[3], minutes=11)
    return store


def test_snapshot_records_round_trip(store, history):
    _run(store, "r1", 0)
    for minute, (step, kind) in enumerate(
        [("", SnapshotKind.START), ("a", SnapshotKind.BEFORE), ("a", SnapshotKind.AFTER)]
    ):
        history.record_snapshot(
            SnapshotRecord(
                run_id="r1", step=step, kind=kind, manifest=_digest(minute), file_count=2,
                total_size=10, created_at=T0 + timedelta(minutes=minute),
            )
        )  # fmt: skip
    found = history.snapshots("r1")
    assert [(s.step, s.kind) for s in found] == [
        ("", SnapshotKind.START),
        ("a", SnapshotKind.BEFORE),
        ("a", SnapshotKind.AFTER),
    ]
    assert found[1].manifest == _digest(1)
    assert history.snapshots("other") == []


def test_data_inputs_by_run_and_digest(two_runs, history):
    assert [d.url for d in history.data_inputs(run_id="r1")] == ["https://x/d.csv"]
    assert [d.run_id for d in history.data_inputs(digest=_digest(9))] == ["r1"]
    assert history.data_inputs(run_id="r2") == []


def test_artifact_events_across_runs(two_runs, history):
    events = history.artifact_events(_digest(1))
    assert {(e.run_id, e.step, e.kind, e.status) for e in events} == {
        ("r1", "a", "output", StepStatus.SUCCEEDED),
        ("r1", "b", "input", StepStatus.SUCCEEDED),
        ("r2", "a", "output", StepStatus.CACHED),
        ("r2", "b", "input", StepStatus.SUCCEEDED),
    }


def test_run_lineage(two_runs, history):
    graph = run_lineage(two_runs, history, "r1")
    steps = [n.id for n in graph.nodes if n.kind == "step_run"]
    assert steps == ["step:r1/a", "step:r1/b"]
    edges = {(e.source, e.target, e.label) for e in graph.edges}
    assert ("step:r1/a", f"artifact:{_digest(1)}", "v1") in edges
    assert (f"artifact:{_digest(1)}", "step:r1/b", "v1") in edges
    assert ("data:https://x/d.csv", f"artifact:{_digest(9)}", "etag:1") in edges
    assert graph.to_json()["root_kind"] == "run"


def test_artifact_lineage_follows_executed_step_runs(two_runs, history):
    graph = artifact_lineage(two_runs, history, _digest(1))
    steps = {n.id for n in graph.nodes if n.kind == "step_run"}
    # Upstream: the run that computed it (not r2's cache hit); downstream: both readers.
    assert steps == {"step:r1/a", "step:r1/b", "step:r2/b"}
    node = next(n for n in graph.nodes if n.digest == _digest(1))
    assert node.detail["reused_by"] == 1
    downstream = artifact_lineage(two_runs, history, _digest(3))
    # v3's producer read v1, which r1's a computed (r2's a was a cache hit).
    assert {n.id for n in downstream.nodes if n.kind == "step_run"} == {"step:r1/a", "step:r2/b"}


def test_artifact_lineage_of_unknown_digest(two_runs, history):
    with pytest.raises(CellpipeError, match="no recorded step run"):
        artifact_lineage(two_runs, history, _digest(77))


def test_run_filters(two_runs):
    runs = two_runs.list_runs()
    pick = lambda **kw: [r.run_id for r in runs if RunFilter.parse(**kw).matches(r)]  # noqa: E731
    assert pick(params=["LR=0.2"]) == ["r2"]
    assert pick(params=["NAME=x"]) == ["r2", "r1"]
    assert pick(metrics=["acc>0.9"]) == ["r2"]
    assert pick(metrics=["acc<=0.8"]) == ["r1"]
    assert pick(metrics=["missing>0"]) == []
    assert pick(params=["LR=0.1"], metrics=["acc>=0.5"]) == ["r1"]


@pytest.mark.parametrize("bad", ["acc", "acc>high", ">3"], ids=["no-op", "not-number", "no-name"])
def test_metric_filter_errors(bad):
    with pytest.raises(CellpipeError, match="is not NAME<OP>NUMBER") as info:
        RunFilter.parse(metrics=[bad])
    assert info.value.exit_code == 2


def test_param_filter_error():
    with pytest.raises(CellpipeError, match="is not NAME=VALUE"):
        RunFilter.parse(params=["LR"])


# -- bounded artifact lineage on SQLite: a few queries per level, straight from the indexes -----


def _shared_runs(store: SqlMetadataStore, first: int, count: int) -> None:
    """Runs whose `load` output (digest 1) every `prep` reads, as `bench_history` builds them."""
    for i in range(first, first + count):
        run_id = f"r{i:04d}"
        _run(store, run_id, i)
        if i == 0:
            _step(store, run_id, "load", StepStatus.SUCCEEDED, outputs=[1], minutes=i)
        else:
            _step(store, run_id, "load", StepStatus.CACHED, outputs=[1], minutes=i, source="r0000")
        _step(store, run_id, "prep", StepStatus.SUCCEEDED, inputs=[1], outputs=[1000 + i],
              minutes=i)  # fmt: skip


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Every statement the SQLite adapter runs from now on."""
    from cellpipe.storage import _sql

    seen: list[tuple[str, object]] = []
    execute = _sql._SqliteConnection.execute

    def recording(self, sql, params=None):  # type: ignore[no-untyped-def]
        seen.append((sql, params))
        return execute(self, sql, params)

    monkeypatch.setattr(_sql._SqliteConnection, "execute", recording)
    return seen


def _selects(seen: list[tuple[str, object]]) -> list[tuple[str, object]]:
    return [(sql, p) for sql, p in seen if sql.startswith("SELECT")]


def test_artifact_lineage_queries_do_not_grow_with_the_runs(tmp_path, statements):
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'cellpipe.db'}")
    try:
        history = history_for(store)
        assert history is not None
        _shared_runs(store, 0, 20)
        statements.clear()
        small = artifact_lineage(store, history, _digest(1), limit=5)
        queries_small = len(_selects(statements))
        _shared_runs(store, 20, 40)
        statements.clear()
        big = artifact_lineage(store, history, _digest(1), limit=5)
        queries_big = len(_selects(statements))
    finally:
        store.close()
    # One producer and the five newest readers either way, and the rest counted.
    shown = [(n.run_id, n.step) for n in big.nodes if n.kind == "step_run"]
    assert shown == [("r0000", "load"), *((f"r{i:04d}", "prep") for i in range(59, 54, -1))]
    root = next(n for n in big.nodes if n.digest == _digest(1))
    assert (root.detail["more_readers"], root.detail["reused_by"]) == (55, 59)
    assert len(big.nodes) == len(small.nodes)
    assert queries_big == queries_small  # never one query per run or per node
    assert queries_big <= 12


def test_readers_are_listed_from_the_index(tmp_path, statements):
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'cellpipe.db'}")
    try:
        history = history_for(store)
        assert history is not None
        _shared_runs(store, 0, 5)
        statements.clear()
        history.artifact_uses([_digest(1)], "input", limit=2)
        history.artifact_uses([_digest(1)], "output", limit=2)
        with store._engine.connect() as conn:
            plans = [
                " / ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", p))
                for sql, p in _selects(statements)
            ]
    finally:
        store.close()
    listing, counting, producing = plans
    # Newest readers first, straight from the index: no sort of every reader, and each
    # step run's status read from the index in one probe (not one per status, not the row).
    status = "COVERING INDEX step_runs_by_status (run_id=? AND step=? AND status>?)"
    assert "COVERING INDEX events_by_artifact (digest=? AND kind=?)" in listing
    assert status in listing
    assert "TEMP B-TREE" not in listing
    assert status in counting
    assert status in producing


# -- lineage per step output (issue 9): equal values share a digest ---------------------------


def _named(store, run_id, step, status, inputs, outputs, minutes=0, source=None):
    """A step run with named variables: inputs {var: (digest n, producer step)}."""
    store.record_step_run(
        StepRunRecord(
            run_id=run_id,
            step=step,
            status=status,
            started_at=T0 + timedelta(minutes=minutes),
            finished_at=T0 + timedelta(minutes=minutes),
            inputs={v: _ref(n) for v, (n, _) in inputs.items()},
            input_sources={v: p for v, (_, p) in inputs.items()},
            outputs={v: _ref(n) for v, n in outputs.items()},
            source_run=source,
        )
    )


@pytest.fixture
def equal_values(store):
    """r1: one -> a (=v5), two -> b (=v5, equal bytes); use_a reads a, use_b reads b.

    r2: one and two are cache hits of r1; use_a re-ran (reads a from r2's one).
    """
    _run(store, "r1", 0)
    _named(store, "r1", "one", StepStatus.SUCCEEDED, {}, {"a": 5})
    _named(store, "r1", "two", StepStatus.SUCCEEDED, {}, {"b": 5})
    _named(store, "r1", "use_a", StepStatus.SUCCEEDED, {"a": (5, "one")}, {"x": 6}, 1)
    _named(store, "r1", "use_b", StepStatus.SUCCEEDED, {"b": (5, "two")}, {"y": 7}, 1)
    _run(store, "r2", 10)
    _named(store, "r2", "one", StepStatus.CACHED, {}, {"a": 5}, 10, source="r1")
    _named(store, "r2", "two", StepStatus.CACHED, {}, {"b": 5}, 10, source="r1")
    _named(store, "r2", "use_a", StepStatus.SUCCEEDED, {"a": (5, "one")}, {"x": 8}, 11)
    return store


def _steps_of(graph) -> set[tuple[str, str]]:
    return {(n.run_id, n.step) for n in graph.nodes if n.kind == "step_run"}


def _input_producers(graph) -> dict[tuple[str, str], str | None]:
    return {(e.target, e.label): e.producer for e in graph.edges if e.target.startswith("step:")}


def test_run_lineage_names_each_inputs_own_producer(equal_values, history):
    graph = run_lineage(equal_values, history, "r1")
    assert _input_producers(graph) == {
        ("step:r1/use_a", "a"): "step:r1/one",
        ("step:r1/use_b", "b"): "step:r1/two",
    }


def test_upstream_of_an_output_follows_its_producer_not_an_equal_value(equal_values, history):
    # x of r1's use_a: upstream is one (a), never two (b), though a and b are the same bytes.
    graph = artifact_lineage(equal_values, history, _digest(6))
    assert _steps_of(graph) == {("r1", "use_a"), ("r1", "one")}
    # r2's use_a read a from r2's one, a cache hit: the producer is the run it reused.
    graph = artifact_lineage(equal_values, history, _digest(8))
    assert _steps_of(graph) == {("r2", "use_a"), ("r1", "one")}
    assert _input_producers(graph) == {("step:r2/use_a", "a"): "step:r1/one"}


def test_lineage_of_a_shared_digest_lists_all_its_producers(equal_values, history):
    graph = artifact_lineage(equal_values, history, _digest(5))
    producers = {e.source for e in graph.edges if e.target == f"artifact:{_digest(5)}"}
    assert producers == {"step:r1/one", "step:r1/two"}
    assert _steps_of(graph) >= {("r1", "use_a"), ("r1", "use_b"), ("r2", "use_a")}


@pytest.mark.parametrize(
    ("step", "variable", "expected"),
    [
        ("one", "a", {("r1", "one"), ("r1", "use_a"), ("r2", "use_a")}),
        ("two", "b", {("r1", "two"), ("r1", "use_b")}),
    ],
)
def test_output_lineage_names_its_own_producer_and_readers(
    equal_values, history, step, variable, expected
):
    from cellpipe.storage.lineage import output_lineage

    graph = output_lineage(equal_values, history, "r1", step, variable)
    assert graph.root == f"r1/{step}/{variable}"
    assert graph.root_kind == "output"
    assert _steps_of(graph) == expected


def test_output_lineage_of_a_cache_hit_is_the_run_that_computed_it(equal_values, history):
    from cellpipe.storage.lineage import output_lineage

    graph = output_lineage(equal_values, history, "r2", "one", "a")
    assert _steps_of(graph) == {("r1", "one"), ("r1", "use_a"), ("r2", "use_a")}


def test_output_lineage_of_an_unknown_output_names_the_outputs(equal_values, history):
    from cellpipe.errors import RunNotFoundError
    from cellpipe.storage.lineage import output_lineage

    with pytest.raises(RunNotFoundError, match="has no output 'z'") as info:
        output_lineage(equal_values, history, "r1", "one", "z")
    assert info.value.hint == "its outputs: a"
    with pytest.raises(RunNotFoundError, match="has no step 'nope'"):
        output_lineage(equal_values, history, "r1", "nope", "a")


def test_inputs_without_a_recorded_producer_fall_back_to_every_producer(store, history):
    _run(store, "r1", 0)
    _named(store, "r1", "one", StepStatus.SUCCEEDED, {}, {"a": 5})
    _named(store, "r1", "two", StepStatus.SUCCEEDED, {}, {"b": 5})
    _step(store, "r1", "use", StepStatus.SUCCEEDED, inputs=[5], outputs=[6], minutes=1)
    graph = artifact_lineage(store, history, _digest(6))
    assert _steps_of(graph) == {("r1", "use"), ("r1", "one"), ("r1", "two")}
