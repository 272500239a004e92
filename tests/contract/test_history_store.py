"""One suite, every history store: the lineage queries (`LineageIndex`) and bounded graphs.

Memory, SQLite and PostgreSQL (a server the tests start; each test gets a new database) must
answer alike: the same step runs, in the same order (newest run id first), the same counts of
what a limit left out.
"""

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend_services import METADATA_BACKENDS, metadata_backend_params
from cellpipe.errors import CellpipeError
from cellpipe.storage.lineage import (
    DataInputRecord,
    artifact_lineage,
    history_for,
    resolve_digest,
    run_lineage,
)
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import ArtifactRef, RunRecord, RunStatus, StepRunRecord, StepStatus

BACKENDS = METADATA_BACKENDS

T0 = datetime(2026, 1, 14, 9, 12, tzinfo=UTC)


@pytest.fixture(params=metadata_backend_params())
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened = BACKENDS[request.param][0](request, tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def history(store: Any) -> Any:
    found = history_for(store)
    assert found is not None
    return found


def digest(n: int) -> ArtifactDigest:
    return ArtifactDigest(f"sha256:{n:064x}")


def ref(n: int) -> ArtifactRef:
    return ArtifactRef(
        digest=digest(n), serializer="npy", serializer_version=1, size=100 + n,
        type_name="numpy.ndarray",
    )  # fmt: skip


def run(store: Any, run_id: str, minutes: int) -> None:
    store.start_run(
        RunRecord(
            run_id=run_id, pipeline="p", notebook="/p/nb.ipynb", notebook_digest=str(digest(0)),
            status=RunStatus.RUNNING, started_at=T0 + timedelta(minutes=minutes), pid=None,
        )
    )  # fmt: skip


def step(
    store: Any,
    run_id: str,
    name: str,
    status: StepStatus = StepStatus.SUCCEEDED,
    *,
    inputs: dict[str, int] | None = None,
    outputs: dict[str, int] | None = None,
    source: str | None = None,
) -> None:
    store.record_step_run(
        StepRunRecord(
            run_id=run_id, step=name, status=status, cache_key=f"key-{name}", source_run=source,
            started_at=T0, finished_at=T0,
            inputs={v: ref(n) for v, n in (inputs or {}).items()},
            outputs={v: ref(n) for v, n in (outputs or {}).items()},
        )
    )  # fmt: skip


def data_input(run_id: str, name: str, n: int, url: str = "https://x/data.csv") -> DataInputRecord:
    return DataInputRecord(
        run_id=run_id, step=name, url=url, version="etag:1", digest=digest(n), size=100 + n,
        fetched_at=T0,
    )  # fmt: skip


SHARED = 1  # computed by r01's load, reused (cache hits) by r02..r07, read by every run's prep
DATA = 50  # a downloaded file: read through cellpipe.data by r02 and r05, as a variable by r04
RUNS = [f"r{i:02d}" for i in range(1, 8)]


@pytest.fixture
def fan_out(store: Any, history: Any) -> Any:
    """Seven runs sharing one artifact, the shape `cellpipe lineage` must keep small."""
    for i, run_id in enumerate(RUNS):
        run(store, run_id, i)
        if i == 0:
            step(store, run_id, "load", outputs={"df": SHARED})
        else:
            step(store, run_id, "load", StepStatus.CACHED, outputs={"df": SHARED}, source="r01")
        # r03 reads the shared artifact under two names: still one reader.
        reads = {"df": SHARED, "again": SHARED} if run_id == "r03" else {"df": SHARED}
        step(store, run_id, "prep", inputs=reads, outputs={"x": 100 + i})
    # A cache hit that read it is a reuse, never a reader; a skipped step run reads nothing.
    step(store, "r07", "prep_cached", StepStatus.CACHED, inputs={"df": SHARED}, source="r01")
    step(store, "r04", "train", inputs={"raw": DATA}, outputs={"m": 200})
    # r05's fetch reads DATA both through cellpipe.data and as a variable: one reader.
    step(store, "r05", "fetch", inputs={"raw": DATA}, outputs={"n": 201})
    step(store, "r02", "fetch", outputs={"n": 202})
    history.record_data_inputs([data_input("r02", "fetch", DATA), data_input("r05", "fetch", DATA)])
    return store


# -- artifact_uses ----------------------------------------------------------------------------


def test_readers_newest_run_first_up_to_the_limit(fan_out: Any, history: Any) -> None:
    uses = history.artifact_uses([digest(SHARED)], "input", limit=3)[digest(SHARED)]
    assert uses.kind == "input"
    assert uses.step_runs == (("r07", "prep"), ("r06", "prep"), ("r05", "prep"))
    assert uses.total == 7  # r03 read it twice, r07's cache hit is not a reader
    assert uses.more == 4
    assert uses.reused_by == 0


@pytest.mark.parametrize(("limit", "shown"), [(None, 7), (7, 7), (50, 7), (0, 0), (1, 1)])
def test_reader_limit(fan_out: Any, history: Any, limit: int | None, shown: int) -> None:
    uses = history.artifact_uses([digest(SHARED)], "input", limit=limit)[digest(SHARED)]
    assert uses.step_runs == tuple((r, "prep") for r in reversed(RUNS))[:shown]
    assert (uses.total, uses.more) == (7, 7 - shown)


def test_producers_and_cache_hits(fan_out: Any, history: Any) -> None:
    uses = history.artifact_uses([digest(SHARED)], "output", limit=50)[digest(SHARED)]
    assert uses.step_runs == (("r01", "load"),)
    assert (uses.total, uses.reused_by) == (1, 6)
    counted = history.artifact_uses([digest(SHARED)], "output", limit=0)[digest(SHARED)]
    assert (counted.step_runs, counted.total, counted.reused_by) == ((), 1, 6)


def test_many_producers_are_limited(store: Any, history: Any) -> None:
    for i, run_id in enumerate(RUNS[:4]):  # `--no-cache` runs: each computed the same bytes
        run(store, run_id, i)
        step(store, run_id, "load", outputs={"df": 300})
    uses = history.artifact_uses([digest(300)], "output", limit=2)[digest(300)]
    assert uses.step_runs == (("r04", "load"), ("r03", "load"))
    assert (uses.total, uses.more, uses.reused_by) == (4, 2, 0)


@pytest.mark.parametrize("limit", [None, 0, 1, 5], ids=["all", "0", "1", "5"])
def test_data_readers_count_once(fan_out: Any, history: Any, limit: int | None) -> None:
    uses = history.artifact_uses([digest(DATA)], "input", limit=limit)[digest(DATA)]
    everyone = (("r05", "fetch"), ("r04", "train"), ("r02", "fetch"))
    assert uses.step_runs == everyone[:limit]
    assert uses.total == 3


def test_many_digests_at_once(fan_out: Any, history: Any) -> None:
    asked = [digest(SHARED), digest(DATA), digest(101), digest(999)]
    readers = history.artifact_uses(asked, "input", limit=2)
    assert [readers[d].total for d in asked] == [7, 3, 0, 0]
    assert readers[digest(SHARED)].step_runs == (("r07", "prep"), ("r06", "prep"))
    producers = history.artifact_uses(asked, "output", limit=2)
    assert [producers[d].total for d in asked] == [1, 0, 1, 0]
    assert producers[digest(101)].step_runs == (("r02", "prep"),)
    assert producers[digest(999)].step_runs == ()


def test_bad_arguments(history: Any) -> None:
    with pytest.raises(ValueError, match="limit"):
        history.artifact_uses([digest(1)], "input", limit=-1)
    with pytest.raises(ValueError, match="kind"):
        history.artifact_uses([digest(1)], "inputs", limit=1)


# -- lineage_steps and find_digests -------------------------------------------------------------


def test_lineage_steps_in_the_order_asked(fan_out: Any, history: Any) -> None:
    found = history.lineage_steps([("r05", "fetch"), ("nope", "x"), ("r02", "load"),
                                   ("r05", "nothing"), ("r05", "fetch")])  # fmt: skip
    assert [(s.run_id, s.step) for s in found] == [("r05", "fetch"), ("r02", "load")]
    fetch, load = found
    assert fetch.status is StepStatus.SUCCEEDED
    assert dict(fetch.inputs) == {"raw": ref(DATA)}
    assert dict(fetch.outputs) == {"n": ref(201)}
    assert fetch.data_inputs == (data_input("r05", "fetch", DATA),)
    assert (load.status, load.source_run, dict(load.inputs)) == (StepStatus.CACHED, "r01", {})
    assert history.lineage_steps([]) == []


def test_step_heads(fan_out: Any, history: Any) -> None:
    heads = history.step_heads([("r05", "fetch"), ("nope", "x"), ("r02", "load")])
    assert dict(heads) == {
        ("r05", "fetch"): (StepStatus.SUCCEEDED, None),
        ("r02", "load"): (StepStatus.CACHED, "r01"),
    }
    assert dict(history.step_heads([])) == {}


def test_find_digests(fan_out: Any, history: Any) -> None:
    history.record_data_inputs([data_input("r01", "load", 0xABC123, url="https://x/other")])
    everything = "sha256:" + "0" * 58
    assert history.find_digests(everything, limit=3) == [digest(SHARED), digest(DATA),
                                                          digest(100)]  # fmt: skip
    assert history.find_digests(str(digest(DATA)), limit=5) == [digest(DATA)]
    assert history.find_digests(str(digest(0xABC123))[:-2], limit=5) == [digest(0xABC123)]
    assert history.find_digests("sha256:f", limit=5) == []
    assert history.find_digests(str(digest(999)), limit=5) == []


def test_resolve_digest(fan_out: Any, history: Any, store: Any) -> None:
    downloaded = ArtifactDigest("sha256:9f2c41" + "0" * 58)
    history.record_data_inputs([replace(data_input("r01", "load", 0), digest=downloaded)])
    assert resolve_digest(history, store, "9f2c41") == downloaded
    assert resolve_digest(history, store, "sha256:9f2c410") == downloaded
    assert resolve_digest(history, store, str(digest(DATA))[7:]) == digest(DATA)
    assert resolve_digest(history, store, f"artifact:{digest(7)}") == digest(7)  # not looked up
    with pytest.raises(CellpipeError, match=r"is ambiguous: it matches sha256:0+1, sha256:0+32"):
        resolve_digest(history, store, "000000")
    with pytest.raises(CellpipeError, match="no recorded artifact digest starts with 'abcdef'"):
        resolve_digest(history, store, "abcdef")


# -- the graph --------------------------------------------------------------------------------


def steps_of(graph: Any) -> list[tuple[str, str]]:
    return [(n.run_id, n.step) for n in graph.nodes if n.kind == "step_run"]


def node(graph: Any, n: int) -> Any:
    return next(x for x in graph.nodes if x.digest == digest(n))


def test_artifact_lineage_is_bounded_and_says_by_how_much(fan_out: Any, history: Any) -> None:
    graph = artifact_lineage(fan_out, history, digest(SHARED), limit=3)
    assert steps_of(graph) == [("r01", "load"), ("r07", "prep"), ("r06", "prep"), ("r05", "prep")]
    root = node(graph, SHARED)
    assert dict(root.detail) == {"serializer": "npy", "type": "numpy.ndarray", "size": 101,
                                 "reused_by": 6, "more_readers": 4}  # fmt: skip
    assert graph.truncated
    doc = graph.to_json()
    assert (doc["limit"], doc["truncated"]) == (3, True)
    assert "more_readers" not in node(graph, 106).detail  # what a reader produced: no readers


def test_artifact_lineage_without_limit(fan_out: Any, history: Any) -> None:
    graph = artifact_lineage(fan_out, history, digest(SHARED), limit=None)
    assert steps_of(graph) == [("r01", "load"), *((r, "prep") for r in reversed(RUNS))]
    assert "more_readers" not in node(graph, SHARED).detail
    assert not graph.truncated
    assert graph.to_json()["limit"] is None
    default = artifact_lineage(fan_out, history, digest(SHARED))  # 50: all seven fit
    assert steps_of(default) == steps_of(graph)
    assert default.limit == 50


def test_limit_zero_only_counts(fan_out: Any, history: Any) -> None:
    graph = artifact_lineage(fan_out, history, digest(SHARED), limit=0)
    assert steps_of(graph) == []
    assert dict(node(graph, SHARED).detail) == {"reused_by": 6, "more_producers": 1,
                                                "more_readers": 7}  # fmt: skip


def test_limit_applies_to_every_artifact_on_the_way(fan_out: Any, history: Any) -> None:
    # Upstream of r05's fetch output: fetch read DATA (three readers in all, not followed
    # upstream) and nothing computed DATA; downstream of DATA: its readers, limited.
    graph = artifact_lineage(fan_out, history, digest(DATA), limit=2)
    assert steps_of(graph) == [("r05", "fetch"), ("r04", "train")]
    data = node(graph, DATA)
    assert data.detail["more_readers"] == 1
    assert "more_producers" not in data.detail
    sources = [n for n in graph.nodes if n.kind == "data_source"]
    assert [s.label for s in sources] == ["https://x/data.csv"]


def test_depth_still_bounds_the_walk(fan_out: Any, history: Any) -> None:
    graph = artifact_lineage(fan_out, history, digest(101), depth=1, limit=5)
    assert steps_of(graph) == [("r02", "prep")]  # its producer; nothing reads it
    alone = artifact_lineage(fan_out, history, digest(SHARED), depth=0)
    assert [n.id for n in alone.nodes] == [f"artifact:{digest(SHARED)}"]
    assert dict(alone.nodes[0].detail) == {"reused_by": 6}
    with pytest.raises(CellpipeError, match="no recorded step run produced or read"):
        artifact_lineage(fan_out, history, digest(999), depth=0)


def test_unknown_artifact(fan_out: Any, history: Any) -> None:
    with pytest.raises(CellpipeError, match="no recorded step run produced or read"):
        artifact_lineage(fan_out, history, digest(999))
    with pytest.raises(ValueError, match="limit"):
        artifact_lineage(fan_out, history, digest(SHARED), limit=-1)


def test_run_lineage_is_unchanged(fan_out: Any, history: Any) -> None:
    graph = run_lineage(fan_out, history, "r05")
    assert steps_of(graph) == [("r05", "load"), ("r05", "prep"), ("r05", "fetch")]
    edges = {(e.source, e.target, e.label) for e in graph.edges}
    assert ("data:https://x/data.csv", f"artifact:{digest(DATA)}", "etag:1") in edges
    assert (f"artifact:{digest(DATA)}", "step:r05/fetch", "https://x/data.csv") in edges
    assert (f"artifact:{digest(DATA)}", "step:r05/fetch", "raw") in edges
    assert (graph.limit, graph.truncated) == (None, False)
