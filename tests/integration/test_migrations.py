"""Migrations: databases written by older schemas open, upgrade and read back (issue 5).

Every ``tests/fixtures/lineage_db/schema_v*.sqlite`` was written by an older cellpipe and is
never regenerated (see the README there). The same v1 database is also rebuilt on PostgreSQL
from the first migration, so the later migrations are proven portable.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from backend_services import PostgresServer
from cellpipe.registry.model import ModelVersion
from cellpipe.registry.store import model_store_for
from cellpipe.storage.backends import open_metadata_store
from cellpipe.storage.lineage import SnapshotKind, artifact_lineage, history_for
from cellpipe.storage.metadata import SCHEMA_VERSION, _statements, migrations
from cellpipe.storage.records import RunStatus, StepStatus

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "lineage_db"
OLD_DATABASES = sorted(FIXTURES.glob("schema_v*.sqlite"))


OLD = "wine-20260114-091200-ab10"
NEW = "wine-20260114-091201-ab11"
# Schema v3 is indexes only: these must exist after an upgrade, and the ones they replace not.
V3_INDEXES = {"events_by_artifact", "step_runs_by_status", "data_inputs_by_artifact"}
REPLACED = {"events_by_digest", "data_inputs_by_digest"}
# Schema v4 is the model registry.
V4_TABLES = {"models", "model_versions", "model_aliases", "model_alias_moves"}


def test_there_is_a_fixture_for_every_older_schema() -> None:
    assert [p.name for p in OLD_DATABASES] == [
        f"schema_v{v}.sqlite" for v in range(1, SCHEMA_VERSION)
    ]


def check_lineage(store: Any) -> None:
    """The upgraded database answers lineage queries (through the v3 indexes)."""
    history = history_for(store)
    assert history is not None
    df = "sha256:" + f"{1:064x}"
    graph = artifact_lineage(store, history, df)
    steps = [(n.run_id, n.step) for n in graph.nodes if n.kind == "step_run"]
    assert steps == [(OLD, "load"), (NEW, "train"), (OLD, "train")]
    root = next(n for n in graph.nodes if n.digest == df)
    assert root.detail["reused_by"] == 1
    assert not graph.truncated
    limited = artifact_lineage(store, history, df, limit=1)
    assert [(n.run_id, n.step) for n in limited.nodes if n.kind == "step_run"] == [
        (OLD, "load"),
        (NEW, "train"),
    ]
    assert next(n for n in limited.nodes if n.digest == df).detail["more_readers"] == 1


def check_wine_runs(url: str) -> None:
    store = open_metadata_store(url)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        runs = store.list_runs()
        assert [r.run_id for r in runs] == [
            "wine-20260114-091201-ab11",
            "wine-20260114-091200-ab10",
        ]
        assert [r.parameters["MAX_DEPTH"] for r in runs] == [6, 4]
        assert [r.metrics["accuracy"] for r in runs] == [0.94, 0.91]
        assert all(r.status == RunStatus.SUCCEEDED for r in runs)
        load, train = store.step_runs("wine-20260114-091201-ab11")
        assert load.status == StepStatus.CACHED
        assert load.source_run == "wine-20260114-091200-ab10"
        assert train.inputs["df"] == load.outputs["df"]
        assert dict(train.input_sources) == {}  # written before v5: producer unknown
        assert train.outputs["model"].type_name == "sklearn.tree.DecisionTreeClassifier"
        assert dict(train.metrics) == {"accuracy": 0.94}
        hit = store.find_cached("train", "key-train-4")
        assert hit is not None
        assert hit.run_id == "wine-20260114-091200-ab10"
        assert store.get_run("wine-20260114-091200").run_id == "wine-20260114-091200-ab10"
        check_lineage(store)
        check_registry(store, train.outputs["model"])
    finally:
        store.close()


def check_registry(store: Any, model: Any) -> None:
    """The upgraded database has the v4 tables: a run's output registers as a model."""
    from datetime import UTC, datetime

    models = model_store_for(store)
    assert [m.name for m in models.list_models()] in ([], ["iris"])  # v5's file has iris
    version = models.add_version(
        ModelVersion(name="wine", version=0, artifact=model, created_at=datetime.now(UTC),
                     run_id=NEW, step="train", variable="model", parameters={"MAX_DEPTH": 6})
    )  # fmt: skip
    assert version.version == 1
    models.move_alias("wine", "production", 1, at=datetime.now(UTC))
    got = models.alias_version("wine", "production")
    assert (got.run_id, got.artifact) == (NEW, model)


@pytest.mark.parametrize("database", OLD_DATABASES, ids=[p.stem for p in OLD_DATABASES])
def test_old_sqlite_database_upgrades_and_reads(database: Path, tmp_path: Path) -> None:
    copy = tmp_path / database.name
    shutil.copyfile(database, copy)
    check_wine_runs(f"sqlite:///{copy}")
    conn = sqlite3.connect(copy)
    try:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
        indexes = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))  # each migration applied once
    assert indexes >= V3_INDEXES
    assert not REPLACED & indexes
    assert tables >= V4_TABLES


def test_v2_snapshots_and_data_inputs_survive_the_upgrade(tmp_path: Path) -> None:
    copy = tmp_path / "schema_v2.sqlite"
    shutil.copyfile(FIXTURES / "schema_v2.sqlite", copy)
    store = open_metadata_store(f"sqlite:///{copy}")
    try:
        assert store.schema_version() == SCHEMA_VERSION
        history = history_for(store)
        assert history is not None
        snaps = history.snapshots(OLD)
        assert [(s.step, s.kind) for s in snaps] == [
            ("", SnapshotKind.START),
            ("load", SnapshotKind.BEFORE),
            ("load", SnapshotKind.AFTER),
            ("train", SnapshotKind.BEFORE),
            ("train", SnapshotKind.AFTER),
        ]
        [data] = history.data_inputs(run_id=OLD)
        assert (data.url, data.version, data.size) == ("https://example.org/wine.csv",
                                                       'etag:"v1"', 4321)  # fmt: skip
        # Where did the downloaded file go? Into the load step (data_inputs index), whose
        # output both runs' train steps read.
        graph = artifact_lineage(store, history, data.digest)
        steps = [(n.run_id, n.step) for n in graph.nodes if n.kind == "step_run"]
        assert steps == [(OLD, "load"), (NEW, "train"), (OLD, "train")]
        assert [n.label for n in graph.nodes if n.kind == "data_source"] == [data.url]
    finally:
        store.close()


@pytest.mark.postgres
def test_v1_database_upgrades_on_postgresql(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """Copy the v1 fixture's rows into a PostgreSQL database at v1, then open it."""
    dbname = postgres_url.rsplit("/", 1)[1]
    version, sql = migrations()[0]
    assert version == 1
    source = sqlite3.connect(FIXTURES / "schema_v1.sqlite")
    try:
        with postgres_server.connect(dbname) as pg:
            for statement in _statements(sql):
                pg.execute(statement)
            # Parents before children, for the foreign keys.
            for table in ("schema_version", "runs", "parameters", "step_runs", "metrics",
                          "artifacts", "events", "files_read", "run_events"):  # fmt: skip
                cursor = source.execute(f"SELECT * FROM {table}")
                columns = [c[0] for c in cursor.description]
                rows = cursor.fetchall()
                if rows:
                    marks = ", ".join(["%s"] * len(columns))
                    with pg.cursor() as cur:
                        cur.executemany(
                            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
                        )
    finally:
        source.close()
    check_wine_runs(postgres_url)
    with postgres_server.connect(dbname) as pg, pg.cursor() as cur:
        cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        indexes = {name for (name,) in cur.fetchall()}
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {name for (name,) in cur.fetchall()}
    assert indexes >= V3_INDEXES
    assert tables >= V4_TABLES
    assert not REPLACED & indexes


def test_item13_v5_model_versions_upgrade_to_v6(tmp_path: Path) -> None:
    """Versions registered before v6 read back with the defaults and take the v6 changes."""
    from datetime import UTC, datetime

    from cellpipe.errors import RegistryError

    copy = tmp_path / "schema_v5.sqlite"
    shutil.copyfile(FIXTURES / "schema_v5.sqlite", copy)
    store = open_metadata_store(f"sqlite:///{copy}")
    try:
        models = model_store_for(store)
        first, second = models.versions("iris")
        assert (first.version, first.aliases, second.version) == (1, ("production",), 2)
        for v in (first, second):
            assert (dict(v.tags), v.archived, dict(v.packages), v.input_example) == (
                {}, False, {}, None,
            )  # fmt: skip
        [summary] = [m for m in models.list_models() if m.name == "iris"]
        assert (summary.latest, summary.version_count, summary.archived_count) == (2, 2, 0)
        now = datetime.now(UTC)
        with pytest.raises(RegistryError, match="production"):
            models.set_archived("iris", 1, True, at=now)
        assert models.set_archived("iris", 2, True, at=now).archived
        assert models.latest_version("iris").version == 1
        models.set_tags("iris", 1, {"team": "ml"})
        models.set_archived("iris", 2, False, at=now)
        models.delete_version("iris", 2, at=now)
        assert [v.version for v in models.versions("iris")] == [1]
        assert dict(models.get_version("iris", 1).tags) == {"team": "ml"}
        assert len(models.alias_history("iris")) == 1
    finally:
        store.close()
