"""Team storage end to end: the backend table, cellpipe.toml, S3 through moto, PostgreSQL.

Unit-level behaviour of each store is in tests/contract; these tests check how the pieces
are chosen and wired: URL schemes, settings precedence, the S3 read cache and lazy imports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend_services import S3Service
from cellpipe.api import open_project
from cellpipe.config import Settings
from cellpipe.errors import ArtifactCorruptedError, CellpipeError, StorageError
from cellpipe.storage.artifacts import LocalArtifactStore, digest_bytes
from cellpipe.storage.backends import (
    open_artifact_store,
    open_metadata_store,
    to_sqlalchemy_url,
)
from cellpipe.storage.remote import FsspecArtifactStore

# -- the backend table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("sqlite:////abs/c.db", "sqlite:////abs/c.db"),
        ("sqlite:///rel.db", "sqlite:///rel.db"),
    ],
    ids=["postgresql", "postgres", "psycopg", "explicit-driver", "sqlite-abs", "sqlite-rel"],
)
def test_metadata_urls_are_normalised(url: str, expected: str) -> None:
    assert to_sqlalchemy_url(url) == expected


def test_unknown_metadata_scheme_lists_the_known_ones() -> None:
    with pytest.raises(StorageError, match="unsupported metadata store URL") as info:
        to_sqlalchemy_url("mysql://root:secret@h/db")
    assert "secret" not in str(info.value)
    assert info.value.hint is not None
    assert "postgresql://" in info.value.hint


@pytest.mark.parametrize("form", ["plain", "file"])
def test_local_artifact_urls(tmp_path: Path, form: str) -> None:
    url = str(tmp_path / "a") if form == "plain" else f"file://{tmp_path / 'a'}"
    store = open_artifact_store(url, cache_dir=tmp_path / "cache")
    assert isinstance(store, LocalArtifactStore)
    assert store.root == tmp_path / "a"


def test_unknown_artifact_scheme(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unsupported artifact store URL") as info:
        open_artifact_store("ftp://host/x", cache_dir=tmp_path)
    assert info.value.hint is not None
    assert "s3://" in info.value.hint


def test_importing_storage_loads_no_backend_package() -> None:
    code = (
        "import sys, cellpipe, cellpipe.storage, cellpipe.storage.backends, "
        "cellpipe.storage.metadata, cellpipe.storage.remote, cellpipe.config, cellpipe.api\n"
        "heavy = {'s3fs', 'boto3', 'botocore', 'aiobotocore', 'psycopg', 'fsspec', 'moto'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.postgres
def test_unreachable_postgresql_is_a_storage_error() -> None:
    from backend_services import free_port

    url = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    with pytest.raises(StorageError, match="cannot open the metadata store") as info:
        open_metadata_store(url)
    assert "secret" not in str(info.value)


# -- settings: cellpipe.toml and the environment ---------------------------------------------


def write_toml(root: Path, body: str) -> Path:
    notebook = root / "nb.ipynb"
    (root / "cellpipe.toml").write_text(body)
    return notebook


def test_defaults_without_file_or_env(tmp_path: Path) -> None:
    s = Settings.for_notebook(tmp_path / "nb.ipynb", env={})
    assert s.db_url == f"sqlite:///{tmp_path / '.cellpipe' / 'cellpipe.db'}"
    assert s.artifacts_url == str(tmp_path / ".cellpipe" / "artifacts")
    assert s.s3_endpoint_url is None
    assert s.storage_options() == {}


def test_toml_sets_storage_and_env_overrides_it(tmp_path: Path) -> None:
    notebook = write_toml(
        tmp_path,
        '[storage]\ndb_url = "postgresql://team@db/cellpipe"\n'
        'artifacts_url = "s3://bucket/prefix"\ns3_endpoint_url = "http://minio:9000"\n',
    )
    s = Settings.for_notebook(notebook, env={})
    assert (s.db_url, s.artifacts_url) == ("postgresql://team@db/cellpipe", "s3://bucket/prefix")
    assert s.storage_options() == {"endpoint_url": "http://minio:9000"}
    env = {
        "CELLPIPE_DB_URL": "sqlite:////elsewhere.db",
        "CELLPIPE_ARTIFACTS_URL": "/elsewhere",
        "AWS_ENDPOINT_URL": "http://aws-env:1",
    }
    s = Settings.for_notebook(notebook, env=env)
    assert (s.db_url, s.artifacts_url) == ("sqlite:////elsewhere.db", "/elsewhere")
    assert s.s3_endpoint_url == "http://aws-env:1"
    env["CELLPIPE_S3_ENDPOINT_URL"] = "http://cellpipe-env:2"
    assert Settings.for_notebook(notebook, env=env).s3_endpoint_url == "http://cellpipe-env:2"


def test_relative_paths_in_toml_are_relative_to_the_project(tmp_path: Path) -> None:
    notebook = write_toml(
        tmp_path, '[storage]\ndb_url = "sqlite:///meta/c.db"\nartifacts_url = "store"\n'
    )
    s = Settings.for_notebook(notebook, env={})
    assert s.db_url == f"sqlite:///{tmp_path / 'meta' / 'c.db'}"
    assert s.artifacts_url == str(tmp_path / "store")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[storage\n", "cannot read"),
        ('[storage]\ndb_uri = "sqlite://"\n', "unknown key.*db_uri"),
        ("[storage]\ndb_url = 3\n", "must be a non-empty string"),
        ('storage = "x"\n', "must be a table"),
    ],
    ids=["syntax", "unknown-key", "not-a-string", "not-a-table"],
)
def test_bad_toml_is_an_error_naming_the_file(tmp_path: Path, body: str, message: str) -> None:
    notebook = write_toml(tmp_path, body)
    with pytest.raises(CellpipeError, match=message) as info:
        Settings.for_notebook(notebook, env={})
    assert "cellpipe.toml" in info.value.message


def test_discover_finds_a_project_by_its_toml(tmp_path: Path) -> None:
    write_toml(tmp_path, '[storage]\nartifacts_url = "store"\n')
    (tmp_path / "sub").mkdir()
    found = Settings.discover(tmp_path / "sub", env={})
    assert found is not None
    assert found.artifacts_url == str(tmp_path / "store")


@pytest.mark.postgres
def test_open_project_uses_postgresql_from_toml(tmp_path: Path, postgres_url: str) -> None:
    notebook = write_toml(tmp_path, f'[storage]\ndb_url = "{postgres_url}"\n')
    settings = Settings.for_notebook(notebook, env={})
    with open_project(settings, create=False) as project:
        assert project.metadata._engine.dialect.name == "postgresql"
        assert project.metadata.list_runs() == []
        assert isinstance(project.artifacts, LocalArtifactStore)


@pytest.mark.s3
def test_open_project_opens_s3_artifacts_from_toml(
    tmp_path: Path, s3_service: S3Service, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Credentials come from the environment, as for boto3; only the endpoint is a setting.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    notebook = write_toml(tmp_path, f'[storage]\nartifacts_url = "{s3_url}"\n')
    settings = Settings.for_notebook(
        notebook, env={"CELLPIPE_S3_ENDPOINT_URL": s3_service.endpoint_url}
    )
    with open_project(settings) as project:
        assert isinstance(project.artifacts, FsspecArtifactStore)
        digest = project.artifacts.put_bytes(b"team")
        assert project.artifacts.local_path(digest).read_bytes() == b"team"
    assert not (settings.state_dir / "artifacts").exists()


# -- S3 specifics ----------------------------------------------------------------------------


@pytest.fixture
def s3_store(tmp_path: Path, s3_service: S3Service, s3_url: str) -> FsspecArtifactStore:
    store = open_artifact_store(
        s3_url, cache_dir=tmp_path / "cache", storage_options=s3_service.storage_options
    )
    assert isinstance(store, FsspecArtifactStore)
    return store


@pytest.mark.s3
def test_s3_layout_is_content_addressed_under_the_prefix(
    s3_store: FsspecArtifactStore, s3_url: str
) -> None:
    digest = s3_store.put_bytes(b"abc")
    hex_ = digest.removeprefix("sha256:")
    assert s3_store.url_for(digest) == f"{s3_url}/sha256/{hex_[:2]}/{hex_}"
    assert s3_store.fs.cat_file(s3_store.key_for(digest)) == b"abc"


@pytest.mark.s3
def test_s3_write_once(
    s3_store: FsspecArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = s3_store.put_bytes(b"abc")

    def no_upload(*args: object, **kwargs: object) -> None:
        raise AssertionError("an existing artifact was uploaded again")

    monkeypatch.setattr(s3_store.fs, "pipe_file", no_upload)
    monkeypatch.setattr(s3_store.fs, "put_file", no_upload)
    assert s3_store.put_bytes(b"abc") == digest
    src = tmp_path / "same.bin"
    src.write_bytes(b"abc")
    assert s3_store.put_file(src, move=True) == digest
    assert not src.exists()


@pytest.mark.s3
def test_s3_move_keeps_a_verified_local_copy(
    s3_store: FsspecArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = s3_store.scratch_dir() / "value.npy"
    src.write_bytes(b"x" * 1000)
    inode = src.stat().st_ino
    digest = s3_store.put_file(src, move=True)
    assert not src.exists()
    assert s3_store.cache.path_for(digest).stat().st_ino == inode  # renamed, not copied

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("local_path downloaded an artifact it already had")

    monkeypatch.setattr(s3_store.fs, "open", no_download)
    assert s3_store.local_path(digest).read_bytes() == b"x" * 1000


@pytest.mark.s3
def test_s3_read_from_another_machine_downloads_and_verifies(
    tmp_path: Path, s3_service: S3Service, s3_url: str, s3_store: FsspecArtifactStore
) -> None:
    digest = s3_store.put_bytes(b"shared bytes")
    other = FsspecArtifactStore(
        s3_url, cache_dir=tmp_path / "other-cache", storage_options=s3_service.storage_options
    )
    path = other.local_path(digest)
    assert path.read_bytes() == b"shared bytes"
    assert path.is_relative_to(tmp_path / "other-cache")
    assert list((tmp_path / "other-cache" / "tmp").iterdir()) == []  # no partial downloads

    tampered = s3_store.put_bytes(b"will be tampered")
    s3_store.fs.pipe_file(s3_store.key_for(tampered), b"evil")
    third = FsspecArtifactStore(
        s3_url, cache_dir=tmp_path / "third-cache", storage_options=s3_service.storage_options
    )
    with pytest.raises(ArtifactCorruptedError, match=s3_url) as info:
        third.local_path(tampered)
    assert not third.cache.exists(tampered)  # bad bytes never reach the cache
    assert digest_bytes(b"evil") in info.value.message


@pytest.mark.s3
def test_s3_artifact_loads_memory_mapped(s3_store: FsspecArtifactStore) -> None:
    np = pytest.importorskip("numpy")
    src = s3_store.scratch_dir() / "a.npy"
    np.save(src, np.arange(1000, dtype="int64"))
    digest = s3_store.put_file(src)
    s3_store.cache.remove(digest)
    array = np.load(s3_store.local_path(digest), mmap_mode="r")
    assert int(array[999]) == 999


@pytest.mark.s3
def test_s3_endpoint_from_settings_environment(
    tmp_path: Path, s3_service: S3Service, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = Settings.for_notebook(
        tmp_path / "nb.ipynb",
        env={"CELLPIPE_ARTIFACTS_URL": s3_url, "CELLPIPE_S3_ENDPOINT_URL": s3_service.endpoint_url},
    )
    store = open_artifact_store(
        settings.artifacts_url,
        cache_dir=settings.cache_dir,
        storage_options=settings.storage_options(),
    )
    digest = store.put_bytes(b"via settings")
    assert store.exists(digest)
    assert store.local_path(digest).read_bytes() == b"via settings"
