"""One suite, every ArtifactStore backend. A new backend is one more entry in BACKENDS.

The S3 backend runs against moto's S3 server on 127.0.0.1 (the `s3_service` fixture).
"""

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cellpipe.errors import ArtifactCorruptedError, ArtifactNotFoundError
from cellpipe.storage.artifacts import (
    LocalArtifactStore,
    MemoryArtifactStore,
    digest_bytes,
    digest_file,
)
from cellpipe.storage.backends import open_artifact_store
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.remote import FsspecArtifactStore


def _corrupt_local(store: Any, digest: ArtifactDigest, data: bytes) -> None:
    path = store.path_for(digest)
    path.chmod(0o644)
    path.write_bytes(data)


def _corrupt_memory(store: Any, digest: ArtifactDigest, data: bytes) -> None:
    store.blobs[digest] = data


def _corrupt_s3(store: Any, digest: ArtifactDigest, data: bytes) -> None:
    store.fs.pipe_file(store.key_for(digest), data)  # the remote object...
    _corrupt_local(store.cache, digest, data)  # ...and the local cached copy


def _open_s3(request: pytest.FixtureRequest, tmp: Path) -> FsspecArtifactStore:
    service = request.getfixturevalue("s3_service")
    url = request.getfixturevalue("s3_url")
    store = open_artifact_store(
        url, cache_dir=tmp / "cache", storage_options=service.storage_options
    )
    assert isinstance(store, FsspecArtifactStore)
    return store


@dataclass(frozen=True)
class Backend:
    name: str
    make: Callable[[pytest.FixtureRequest, Path], Any]  # (request for fixtures, tmp_path)
    corrupt: Callable[[Any, ArtifactDigest, bytes], None]  # replace the stored bytes
    marks: tuple[pytest.MarkDecorator, ...] = ()


BACKENDS = [
    Backend("memory", lambda req, tmp: MemoryArtifactStore(), _corrupt_memory),
    Backend("local", lambda req, tmp: LocalArtifactStore(tmp / "artifacts"), _corrupt_local),
    Backend("s3", _open_s3, _corrupt_s3, marks=(pytest.mark.s3,)),
]


@pytest.fixture(params=[pytest.param(b, id=b.name, marks=b.marks) for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def store(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    s = backend.make(request, tmp_path)
    yield s
    s.close()


def test_put_bytes_is_content_addressed_and_idempotent(store: Any) -> None:
    d1 = store.put_bytes(b"hello")
    d2 = store.put_bytes(b"hello")
    assert d1 == d2 == digest_bytes(b"hello")
    assert d1.startswith("sha256:")
    assert len(d1) == len("sha256:") + 64
    assert store.exists(d1)
    with store.open(d1) as f:
        assert f.read() == b"hello"
    assert store.local_path(d1).read_bytes() == b"hello"


def test_empty_artifact(store: Any) -> None:
    d = store.put_bytes(b"")
    assert store.local_path(d).read_bytes() == b""


def test_put_file_matches_put_bytes(store: Any, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several 1 MiB chunks
    src = tmp_path / "value.bin"
    src.write_bytes(data)
    digest = store.put_file(src)
    assert digest == digest_bytes(data) == digest_file(src)
    assert src.exists()
    assert store.put_bytes(data) == digest
    assert store.local_path(digest).read_bytes() == data


def test_put_file_move_consumes_the_file(store: Any, tmp_path: Path) -> None:
    src = tmp_path / "moved.bin"
    src.write_bytes(b"payload")
    digest = store.put_file(src, move=True)
    assert not src.exists()
    assert store.local_path(digest).read_bytes() == b"payload"
    again = tmp_path / "again.bin"
    again.write_bytes(b"payload")
    assert store.put_file(again, move=True) == digest
    assert not again.exists()


def test_missing_artifact(store: Any) -> None:
    missing = digest_bytes(b"never stored")
    assert not store.exists(missing)
    with pytest.raises(ArtifactNotFoundError, match=missing):
        store.local_path(missing)
    with pytest.raises(ArtifactNotFoundError):
        store.open(missing)


def test_malformed_digest(store: Any) -> None:
    with pytest.raises(ValueError, match="not an artifact digest"):
        store.local_path(ArtifactDigest("md5:abc"))


def test_corruption_is_detected_with_a_hint(store: Any, backend: Backend) -> None:
    digest = store.put_bytes(b"original bytes")
    store.local_path(digest)  # known good once
    backend.corrupt(store, digest, b"tampered")
    with pytest.raises(ArtifactCorruptedError, match=digest) as info:
        store.local_path(digest)
    assert info.value.hint is not None
    assert "run again" in info.value.hint
    with pytest.raises(ArtifactCorruptedError):
        store.open(digest)


def test_concurrent_writers_of_the_same_bytes(store: Any) -> None:
    data = os.urandom(256 * 1024)
    results: list[str] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            results.append(store.put_bytes(data))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert store.local_path(results[0]).read_bytes() == data


# -- local-store specifics --------------------------------------------------------------------


def test_local_layout_and_read_only(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put_bytes(b"abc")
    hex_ = digest.removeprefix("sha256:")
    path = tmp_path / "sha256" / hex_[:2] / hex_
    assert store.local_path(digest) == path
    # tmp_path exists (its mode is pytest's): new artifacts get 0400 plus its read bits.
    assert path.stat().st_mode & 0o777 == 0o400 | (tmp_path.stat().st_mode & 0o044)
    assert list((tmp_path / "tmp").iterdir()) == []  # no temp files left behind


def test_local_never_overwrites(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put_bytes(b"abc")
    inode = store.path_for(digest).stat().st_ino
    store.put_bytes(b"abc")
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    store.put_file(src, move=True)
    assert store.path_for(digest).stat().st_ino == inode


def test_local_truncation_detected_by_stat_check(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put_bytes(b"0123456789")
    store.local_path(digest)
    path = store.path_for(digest)
    path.chmod(0o644)
    with path.open("r+b") as f:
        f.truncate(5)
    with pytest.raises(ArtifactCorruptedError, match=str(path)):
        store.local_path(digest)


def test_local_verify_always_catches_same_stat_bit_rot(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path, verify="always")
    digest = store.put_bytes(b"0123456789")
    path = store.path_for(digest)
    st = path.stat()
    path.chmod(0o644)
    path.write_bytes(b"0123456780")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ArtifactCorruptedError):
        store.local_path(digest)


def test_local_repairs_missing_stamp(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put_bytes(b"abc")
    stamp = store.path_for(digest).with_name(store.path_for(digest).name + ".ok")
    stamp.unlink()
    assert store.local_path(digest).read_bytes() == b"abc"  # hashed, then re-stamped
    assert stamp.exists()


def test_local_move_from_scratch_dir_is_a_rename(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    src = store.scratch_dir() / "big.npy"
    src.write_bytes(b"x" * 100)
    inode = src.stat().st_ino
    digest = store.put_file(src, move=True)
    assert store.path_for(digest).stat().st_ino == inode
