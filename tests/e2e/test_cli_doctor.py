"""``cellpipe doctor`` on real damaged databases (issue 10, item 4).

The database of a project with real runs is damaged three ways (truncated, random bytes, a
valid header with noise after the first page). Every command then names the damaged file and
the way out instead of "this is a bug"; ``doctor`` reports it; ``doctor --repair`` keeps the
old file aside and rebuilds the runs from the run folders, which ``runs``/``show`` then list.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import RunCli

pytestmark = pytest.mark.e2e


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(3).randbytes(50_000))


def _damaged_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    rng = random.Random(4)
    for i in range(4096, len(data)):
        data[i] = rng.randrange(256)
    path.write_bytes(bytes(data))


DAMAGES: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "random-bytes": _random_bytes,
    "damaged-pages": _damaged_pages,
}


@pytest.fixture
def project(run_cli: RunCli, examples: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The diamond example with two finished runs (different parameters), the DB checkpointed."""
    folder = examples / "diamond"
    monkeypatch.chdir(folder)
    for args in ([], ["-p", "N=50"]):
        result = run_cli("run", "diamond.ipynb", *args)
        assert result.code == 0, result.err
    database = folder / ".cellpipe" / "cellpipe.db"
    conn = sqlite3.connect(database)  # fold the WAL in, so damaging the file damages it all
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    return folder


def test_doctor_on_a_healthy_project_passes(run_cli: RunCli, project: Path) -> None:
    result = run_cli("doctor", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["ok"] is True
    assert doc["damaged_database"] is False
    checks = {f["check"]: f["status"] for f in doc["findings"]}
    assert checks == {
        "database": "ok",
        "schema": "ok",
        "artifacts": "ok",
        "digests": "ok",
        "permissions": "ok",
        "disk space": checks["disk space"],  # depends on the machine
    }
    repair = run_cli("doctor", "--repair", "--json").json()["repair"]
    assert repair["moved_to"] is None
    assert "nothing to repair" in repair["message"]


def test_doctor_finds_a_damaged_artifact(run_cli: RunCli, project: Path) -> None:
    artifact = next(
        p
        for p in sorted((project / ".cellpipe/artifacts/sha256").rglob("*"))
        if p.is_file() and "." not in p.name
    )
    artifact.chmod(0o644)
    artifact.write_bytes(b"not what it was")
    result = run_cli("doctor", "--json", "--sample", "1000")
    assert result.code == 1
    digests = next(f for f in result.json()["findings"] if f["check"] == "digests")
    assert digests["status"] == "error"
    assert str(artifact) in digests["message"]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_database_is_named_and_repaired(
    run_cli: RunCli, project: Path, damage: str
) -> None:
    before = run_cli("runs", "--json").json()["runs"]
    database = project / ".cellpipe" / "cellpipe.db"
    DAMAGES[damage](database)
    damaged_bytes = database.read_bytes()

    for args in (["runs"], ["show", before[0]["run_id"]], ["run", "diamond.ipynb"]):
        result = run_cli(*args)
        assert result.code == 1, args
        assert "bug in cellpipe" not in result.err
        assert "damaged" in result.err
        assert str(database) in result.err
        assert "intact" in result.err
        assert "cellpipe doctor" in result.err

    check = run_cli("doctor", "--json")
    assert check.code == 1
    doc = check.json()
    assert doc["damaged_database"] is True
    assert doc["repair"] is None
    assert database.read_bytes() == damaged_bytes  # checking never writes

    repaired = run_cli("doctor", "--repair", "--json")
    assert repaired.code == 0, repaired.err
    repair = repaired.json()["repair"]
    moved = Path(repair["moved_to"])
    assert moved.parent == database.parent
    assert moved.name.startswith("cellpipe.db.damaged-")
    assert moved.read_bytes() == damaged_bytes  # kept, never deleted
    assert sorted(repair["runs_rebuilt"]) == sorted(r["run_id"] for r in before)
    assert repair["step_runs_rebuilt"] == 8
    assert any("cache keys" in item for item in repair["not_recovered"])

    runs = run_cli("runs", "--json")
    assert runs.code == 0, runs.err
    rebuilt = {r["run_id"]: r for r in runs.json()["runs"]}
    for old in before:
        new = rebuilt[old["run_id"]]
        assert new["status"] == "succeeded"
        assert new["parameters"] == old["parameters"]
        assert new["metrics"] == old["metrics"]
    show = run_cli("show", before[0]["run_id"], "--json").json()
    assert [s["status"] for s in show["steps"]] == ["succeeded"] * 4
    outputs = {(s["step"], name) for s in show["steps"] for name in s["outputs"]}
    assert ("b", "mean") in outputs
    assert run_cli("doctor").code == 0
    again = run_cli("run", "diamond.ipynb")
    assert again.code == 0, again.err
