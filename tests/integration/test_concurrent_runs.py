"""Reliability: 8 concurrent `cellpipe run` processes share one metadata store (issue 5).

Each process runs the same small standard-library notebook with a different ``-p K=<n>``,
so every run is distinct. All must finish, and the store must hold exactly one run per
process with all its step runs: no lost or duplicated records, no "database is locked".
The installed entry point is used, as a user would.

The SQLite file lives inside the notebook's folder (the workspace), where a user may well keep
it: workspace snapshots must skip it and its ``-wal``/``-shm`` files without opening them,
because opening and closing a live SQLite file from another library drops that process's
POSIX locks on it, which lets SQLite corrupt it (SIGBUS, "database disk image is malformed").
See sqlite.org/howtocorrupt.html, section 2.2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cellpipe.storage.backends import open_metadata_store
from cellpipe.storage.records import RunStatus

PROCESSES = 8
CLI = Path(sys.executable).parent / "cellpipe"

NOTEBOOK = """\
# %% tags=["imports"]
import time

# %% tags=["pipeline-parameters"]
K = 0

# %% tags=["step:make"]
base = list(range(100))

# %% tags=["step:scale"]
time.sleep(0.1)
scaled = [x * K for x in base]

# %% tags=["step:total"]
total = sum(scaled)

# %% tags=["pipeline-metrics"]
total
"""


def run_concurrently(tmp_path: Path, db_url: str) -> list[subprocess.CompletedProcess[str]]:
    project = tmp_path / "project"
    project.mkdir()
    notebook = project / "count.py"
    notebook.write_text(NOTEBOOK)
    # Written an hour ago, as far as the clock says: a file younger than the stat cache's racy
    # window is rightly hashed again and not cached, and how soon the runs start after this
    # line is up to the machine's load.
    hour_ago = time.time() - 3600
    os.utime(notebook, (hour_ago, hour_ago))
    # Fault handler: a crash (say SIGBUS in SQLite's shared memory) prints a traceback.
    env = {**os.environ, "CELLPIPE_DB_URL": db_url, "PYTHONFAULTHANDLER": "1"}
    env.pop("CELLPIPE_ARTIFACTS_URL", None)
    procs = [
        subprocess.Popen(
            [str(CLI), "run", str(notebook), "-p", f"K={k}", "--json"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(PROCESSES)
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)  # a bound for a loaded machine
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:  # whatever failed, no run outlives the test
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def check_store(db_url: str, results: list[subprocess.CompletedProcess[str]]) -> None:
    for result in results:
        assert "database is locked" not in result.stderr
        assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    summaries = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    run_ids = {s["run_id"] for s in summaries}
    assert len(run_ids) == PROCESSES

    store = open_metadata_store(db_url)
    try:
        runs = store.list_runs()
        assert sorted(r.run_id for r in runs) == sorted(run_ids)  # none lost, none extra
        assert all(r.status == RunStatus.SUCCEEDED for r in runs)
        assert sorted(r.parameters["K"] for r in runs) == list(range(PROCESSES))
        for run in runs:
            assert run.metrics["total"] == sum(range(100)) * run.parameters["K"]
            steps = store.step_runs(run.run_id)
            assert sorted(s.step for s in steps) == ["make", "scale", "total"]
            assert all(s.finished_at is not None for s in steps)
    finally:
        store.close()


@pytest.mark.slow
def test_eight_cli_runs_share_one_sqlite_store_inside_the_workspace(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'project' / 'shared.db'}"
    check_store(db_url, run_concurrently(tmp_path, db_url))
    workspace = tmp_path / "project"
    assert (workspace / "shared.db").is_file()
    # Snapshots never listed (so never opened) the live database or its journals.
    cache = json.loads((workspace / ".cellpipe" / "snapshot-cache.json").read_text())
    assert "count.py" in cache["entries"]
    assert not [path for path in cache["entries"] if path.startswith("shared.db")]


@pytest.mark.slow
@pytest.mark.postgres
def test_eight_cli_runs_share_one_postgresql_store(tmp_path: Path, postgres_url: str) -> None:
    check_store(postgres_url, run_concurrently(tmp_path, postgres_url))
