"""`latest` and `latest~N` resolve to the newest runs, in the one place run ids are resolved
(issue 11): `get_run` of both metadata stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cellpipe.errors import RunNotFoundError
from cellpipe.storage.metadata import MemoryMetadataStore, SqlMetadataStore, parse_latest
from cellpipe.storage.records import RunRecord, RunStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _run(run_id: str, minutes: int) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline="p",
        notebook="/nb.ipynb",
        notebook_digest="sha256:" + "0" * 64,
        status=RunStatus.SUCCEEDED,
        started_at=T0 + timedelta(minutes=minutes),
    )


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    made = (
        SqlMetadataStore(f"sqlite:///{tmp_path / 'c.db'}")
        if request.param == "sqlite"
        else MemoryMetadataStore()
    )
    yield made
    made.close()


def test_latest_is_the_newest_run_by_start_time_and_tilde_goes_back(store) -> None:
    # Started out of id order: `latest` follows the start time, not the id.
    store.start_run(_run("p-20260101-000200-aaaaaa", 2))
    store.start_run(_run("p-20260101-000100-cccccc", 3))
    store.start_run(_run("p-20260101-000300-bbbbbb", 1))
    assert store.get_run("latest").run_id == "p-20260101-000100-cccccc"
    assert store.get_run("latest~0").run_id == "p-20260101-000100-cccccc"
    assert store.get_run("latest~1").run_id == "p-20260101-000200-aaaaaa"
    assert store.get_run("latest~2").run_id == "p-20260101-000300-bbbbbb"
    with pytest.raises(RunNotFoundError, match="the project has only 3 runs"):
        store.get_run("latest~3")


def test_latest_of_an_empty_project_and_a_bad_count(store) -> None:
    with pytest.raises(RunNotFoundError, match="the project has no runs") as caught:
        store.get_run("latest")
    assert "cellpipe run" in (caught.value.hint or "")
    store.start_run(_run("p-20260101-000100-aaaaaa", 1))
    with pytest.raises(RunNotFoundError, match="only 1 run\n"):
        store.get_run("latest~1")
    with pytest.raises(RunNotFoundError, match="must be followed by a number"):
        store.get_run("latest~x")


def test_a_pipeline_named_latest_is_still_reachable_by_a_longer_prefix(store) -> None:
    store.start_run(_run("latest-20260101-000100-aaaaaa", 1))
    store.start_run(_run("other-20260101-000200-bbbbbb", 2))
    assert store.get_run("latest").run_id == "other-20260101-000200-bbbbbb"
    assert store.get_run("latest-2026").run_id == "latest-20260101-000100-aaaaaa"


def test_parse_latest_only_takes_the_two_forms() -> None:
    assert parse_latest("latest") == 0
    assert parse_latest("latest~12") == 12
    assert parse_latest("latest-20260101") is None
    assert parse_latest("lates") is None
    with pytest.raises(RunNotFoundError):
        parse_latest("latest~-1")
    with pytest.raises(RunNotFoundError):
        parse_latest("latest~\u0661")  # a digit, but not an ASCII one
