"""How a run reaches its stores: the job's artifact location and a live SQLite database.

* Step processes open the artifact store from `ArtifactLocation`: a URL and non-secret
  options (credentials come from the inherited environment, never from a job file).
* Workspace snapshots never open the metadata database when it is a SQLite file inside the
  workspace, nor any SQLite journal (see tests/integration/test_concurrent_runs.py for the
  corruption this prevents).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend_services import S3Service
from cellpipe.errors import StorageError
from cellpipe.runner.jobs import StepJob
from cellpipe.storage.artifacts import LocalArtifactStore, MemoryArtifactStore
from cellpipe.storage.backends import (
    ArtifactLocation,
    is_remote_artifact_url,
    open_artifact_store,
    sqlite_database_file,
)
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.remote import FsspecArtifactStore
from cellpipe.storage.snapshots import WorkspaceScanner


class RecordingStore(MemoryArtifactStore):
    """A memory store that remembers every file it was asked to read."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []

    def put_file(self, path: Path, *, move: bool = False) -> ArtifactDigest:
        # Snapshots hand over the file they opened (/proc/self/fd/N): name its real path.
        self.read.append(Path(path).resolve().name)
        return super().put_file(path, move=move)


def test_snapshots_never_open_the_metadata_database_or_sqlite_journals(tmp_path: Path) -> None:
    names = [
        "nb.ipynb",
        "data.csv",
        "meta.db",
        "meta.db-wal",
        "meta.db-shm",
        "meta.db-journal",
        "other.db",  # a user's own database file is data like any other
        "other.db-wal",
        "sub/x.sqlite-shm",
        "sub/y.sqlite3-wal",
    ]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    store = RecordingStore()
    scanner = WorkspaceScanner(tmp_path, store, private_files=[tmp_path / "meta.db"])
    files = scanner.scan()
    assert sorted(files) == ["data.csv", "nb.ipynb", "other.db"]
    assert sorted(store.read) == ["data.csv", "nb.ipynb", "other.db"]


def test_a_private_file_outside_the_workspace_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "meta.db").write_bytes(b"x")
    scanner = WorkspaceScanner(
        tmp_path / "w", RecordingStore(), private_files=[tmp_path / "meta.db"]
    )
    assert sorted(scanner.scan()) == ["meta.db"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////abs/meta.db", Path("/abs/meta.db")),
        ("sqlite+pysqlite:////abs/meta.db?timeout=5", Path("/abs/meta.db")),
        ("sqlite:///rel/meta.db", Path("rel/meta.db").absolute()),
        ("sqlite:///:memory:", None),
        ("sqlite://", None),
        ("postgresql://u@h/db", None),
    ],
)
def test_sqlite_database_file(url: str, expected: Path | None) -> None:
    assert sqlite_database_file(url) == expected


def test_local_location_round_trips_through_a_job(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    location = ArtifactLocation.of(store)
    assert location == ArtifactLocation(url=str(tmp_path / "a"))
    assert not location.remote
    job = _job(location, tmp_path)
    again = StepJob.from_json(json.loads(json.dumps(job.to_json())))
    assert again.artifacts == location
    opened = again.artifacts.open()
    assert isinstance(opened, LocalArtifactStore)
    assert opened.root == tmp_path / "a"


@pytest.mark.s3
def test_remote_location_leaves_credentials_out(tmp_path: Path, s3_service: S3Service) -> None:
    options = {
        **s3_service.storage_options,
        "client_kwargs": {"region_name": "us-east-1", "aws_secret_access_key": "testing"},
    }
    store = open_artifact_store(
        s3_service.new_url(), cache_dir=tmp_path / "cache", storage_options=options
    )
    assert isinstance(store, FsspecArtifactStore)
    location = ArtifactLocation.of(store)
    assert location.remote
    assert location.cache_dir == str(tmp_path / "cache")
    assert dict(location.storage_options) == {
        "endpoint_url": s3_service.endpoint_url,
        "client_kwargs": {"region_name": "us-east-1"},
    }
    text = json.dumps(_job(location, tmp_path).to_json())
    assert "testing" not in text  # moto's key and secret


def test_a_memory_store_cannot_reach_step_processes() -> None:
    with pytest.raises(StorageError, match="step processes cannot open") as info:
        ArtifactLocation.of(MemoryArtifactStore())
    assert info.value.hint is not None


def test_remote_urls() -> None:
    assert is_remote_artifact_url("s3://b/p")
    assert not is_remote_artifact_url("/tmp/a")
    assert not is_remote_artifact_url("file:///tmp/a")


def _job(location: ArtifactLocation, tmp_path: Path) -> StepJob:
    return StepJob(
        step="a",
        cells=(),
        preamble=(),
        notebook=str(tmp_path / "nb.ipynb"),
        workdir=str(tmp_path),
        params={},
        inputs={},
        outputs=(),
        artifact_root=location.url,
        artifact_cache=location.cache_dir,
        storage_options=location.storage_options,
        scratch_dir=str(tmp_path / "scratch"),
    )


TINY = """\
# %% tags=["pipeline-parameters"]
K = 2

# %% tags=["step:make"]
xs = list(range(K))

# %% tags=["step:total"]
total = sum(xs)
"""


@pytest.mark.slow
def test_a_local_run_imports_no_remote_storage_package(tmp_path: Path) -> None:
    notebook = tmp_path / "tiny.py"
    notebook.write_text(TINY)
    code = (
        "import sys\n"
        "from cellpipe.api import run_notebook\n"
        f"for _ in range(2):\n    run_notebook({str(notebook)!r})\n"
        "heavy = {'s3fs', 'boto3', 'botocore', 'aiobotocore', 'fsspec'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLPIPE_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
