"""Artifacts on an object store through fsspec (S3 and S3-compatible stores such as MinIO).

Owns: `FsspecArtifactStore`, a content-addressed `ArtifactStore` over any fsspec URL whose
writes are atomic, with a local read cache.

Layout::

    s3://bucket/prefix/sha256/9f/9f2c…e1     the artifact (full 64-hex name)
    <cache_dir>/sha256/9f/9f2c…e1           verified local copy (a `LocalArtifactStore`)

Invariants:
    * write once: a write first checks whether the key exists and skips the upload if so.
      Two writers racing past that check upload identical bytes under the same key, so the
      outcome is the same whichever wins;
    * no half-written object is ever visible: an S3 ``PUT`` (and a multipart upload, on
      completion) publishes the whole object at once. This is why the store is meant for
      object stores only; local folders use `LocalArtifactStore`, which gets the same
      guarantee from a rename;
    * every byte read from the remote is hashed while it is downloaded, and a mismatch with
      the digest raises `ArtifactCorruptedError` naming the remote URL. Verified bytes land in
      the local cache, which ``local_path`` returns (memory-mapped loads need a real file) and
      which checks itself like any `LocalArtifactStore`; a damaged cached copy is dropped and
      fetched again;
    * the remote is the truth for ``exists``: a digest only in the local cache (for example
      deleted from the bucket) is not reported as stored, so other machines are never told
      an artifact exists that they cannot fetch.

Imports fsspec (and through it s3fs, boto) only when a store is created, so ``import
cellpipe.storage`` stays light.

Must not depend on: serializers, the metadata store, notebooks, the pipeline model, the runner.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from cellpipe.errors import (
    ArtifactCorruptedError,
    ArtifactNotFoundError,
    CellpipeError,
    StorageError,
)
from cellpipe.storage.artifacts import (
    LocalArtifactStore,
    _copy_hashing,
    digest_bytes,
    digest_file,
    parse_digest,
)
from cellpipe.storage.protocols import ArtifactDigest

__all__ = ["FsspecArtifactStore"]

logger = logging.getLogger(__name__)

_ALGORITHM = "sha256"


class FsspecArtifactStore:
    """Content-addressed artifacts on an object store, with a verified local read cache.

    Args:
        url: where the artifacts live, ``s3://bucket/prefix`` (the prefix is optional).
        cache_dir: a local folder for verified copies (``.cellpipe/cache/artifacts``);
            created on first use.
        storage_options: passed to the fsspec file system, e.g. ``{"endpoint_url":
            "http://127.0.0.1:9000"}`` for an S3-compatible server, or credentials.

    Raises:
        StorageError: if fsspec (or the package for the URL's protocol, s3fs for ``s3://``)
            is not installed.

    Example::

        store = FsspecArtifactStore("s3://team-bucket/cellpipe", cache_dir=Path("cache"))
        digest = store.put_bytes(b"hello")
        store.local_path(digest).read_bytes()  # b"hello", from the cache
    """

    def __init__(
        self,
        url: str,
        *,
        cache_dir: Path,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            from fsspec.core import url_to_fs
        except ImportError as exc:  # pragma: no cover - fsspec ships with cellpipe[team]
            raise _missing_package(url, exc) from exc
        self.url = url.rstrip("/")
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        """The options the file system was opened with (may hold credentials)."""
        try:
            fs, root = url_to_fs(self.url, **self.storage_options)
        except ImportError as exc:
            raise _missing_package(url, exc) from exc
        self.fs: Any = fs
        self._root = str(root).rstrip("/")
        self.cache = LocalArtifactStore(Path(cache_dir))

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({self.url!r})"

    # -- keys -----------------------------------------------------------------------------

    def key_for(self, digest: ArtifactDigest) -> str:
        """Return the artifact's key in the file system (``bucket/prefix/sha256/ab/abcd…``)."""
        hex_ = parse_digest(digest)
        return f"{self._root}/{_ALGORITHM}/{hex_[:2]}/{hex_}"

    def url_for(self, digest: ArtifactDigest) -> str:
        """Return the artifact's full URL (``s3://bucket/prefix/sha256/ab/abcd…``)."""
        return str(self.fs.unstrip_protocol(self.key_for(digest)))

    def scratch_dir(self) -> Path:
        """Return a local folder for files about to be stored with ``put_file(move=True)``.

        A file moved from here ends up in the read cache by a rename after its upload.
        """
        return self.cache.scratch_dir()

    @contextmanager
    def _remote(self, action: str, digest: ArtifactDigest) -> Iterator[None]:
        """Turn the file system's exceptions into cellpipe errors that name the object."""
        try:
            yield
        except CellpipeError:
            raise
        except FileNotFoundError as exc:
            missing = self._missing_bucket()
            if missing is not None:
                raise missing from exc
            raise _not_found(digest, self.url) from None
        except Exception as exc:
            raise StorageError(
                f"could not {action} artifact {digest} at {self.url_for(digest)}: {exc}",
                hint=_hint_for(exc, self.url),
            ) from exc

    def _missing_bucket(self) -> StorageError | None:
        """Return the error for a bucket that does not exist (None when it does, or unknown).

        Only asked after a "not found": a missing bucket makes every object look missing,
        and "create the bucket" is the fix, not "run the pipeline again".
        """
        bucket = self._root.split("/", 1)[0]
        try:
            if self.fs.exists(bucket):
                return None
        except Exception:  # cannot tell: report the object as missing
            return None
        where = str(self.fs.unstrip_protocol(bucket))
        return StorageError(
            f"the bucket {where} of the artifact store {self.url} does not exist",
            hint=f"create it (for example `aws s3 mb {where}`), or point "
            "CELLPIPE_ARTIFACTS_URL (or artifacts_url in cellpipe.toml) at an existing bucket",
        )

    # -- writing --------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> ArtifactDigest:
        """Store ``data`` (idempotent) and return its digest."""
        digest = digest_bytes(data)
        if not self.exists(digest):
            with self._remote("upload", digest):
                self.fs.pipe_file(self.key_for(digest), bytes(data))
        return digest

    def put_file(self, path: Path, *, move: bool = False) -> ArtifactDigest:
        """Store the file's bytes (idempotent) and return their digest.

        Args:
            path: the file to store.
            move: the caller gives the file up. After the upload it is renamed into the local
                cache when it is on the cache's file system (see `scratch_dir`), so reading
                it back costs no download; otherwise it is deleted.

        Returns:
            The digest of the file's bytes.
        """
        src = Path(path)
        digest = digest_file(src)
        if not self.exists(digest):
            with self._remote("upload", digest):
                self.fs.put_file(str(src), self.key_for(digest))
        if move:
            self._keep_in_cache(src, digest)
        return digest

    def _keep_in_cache(self, src: Path, digest: ArtifactDigest) -> None:
        staged = self.cache.scratch_dir() / f"moved-{os.getpid()}-{src.name}"
        try:
            src.replace(staged)
        except OSError:  # another file system: the copy in the cache is not worth a copy
            src.unlink()
            return
        self.cache.adopt(staged, digest)

    # -- reading --------------------------------------------------------------------------

    def exists(self, digest: ArtifactDigest) -> bool:
        """Return whether the artifact is in the remote store."""
        key = self.key_for(digest)
        with self._remote("look up", digest):
            return bool(self.fs.exists(key))

    def local_path(self, digest: ArtifactDigest) -> Path:
        """Return a local file with the artifact's bytes, checked against the digest.

        The first read downloads the artifact into the cache, hashing it on the way.

        Raises:
            ArtifactNotFoundError: if the store does not have it.
            ArtifactCorruptedError: if the stored bytes do not match the digest.
            StorageError: if the remote store cannot be reached.
        """
        parse_digest(digest)
        if self.cache.exists(digest):
            try:
                return self.cache.local_path(digest)
            except ArtifactCorruptedError:
                logger.warning("cached copy of %s is damaged; fetching it again", digest)
                self.cache.remove(digest)
            except ArtifactNotFoundError:
                pass  # removed meanwhile: fetch it
        return self._download(digest)

    def _download(self, digest: ArtifactDigest) -> Path:
        fd, tmp_name = tempfile.mkstemp(dir=self.cache.scratch_dir(), prefix="get-")
        tmp = Path(tmp_name)
        try:
            with (
                self._remote("download", digest),
                self.fs.open(self.key_for(digest), "rb") as src,
                os.fdopen(fd, "wb") as dst,
            ):
                actual = ArtifactDigest(f"{_ALGORITHM}:{_copy_hashing(src, dst)}")
            if actual != digest:
                url = self.url_for(digest)
                raise ArtifactCorruptedError(
                    f"artifact {digest} is corrupted: {url} now hashes to {actual}",
                    hint=f"delete {url} and run again; the step that produced it will be "
                    "recomputed",
                )
            self.cache.adopt(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        return self.cache.path_for(digest)

    def open(self, digest: ArtifactDigest) -> BinaryIO:
        """Open the artifact for reading (from the verified cache, see `local_path`).

        Raises:
            ArtifactNotFoundError: if the store does not have it.
            ArtifactCorruptedError: if the stored bytes do not match the digest.
        """
        return self.local_path(digest).open("rb")

    def close(self) -> None:
        """Release resources (fsspec shares and closes its file systems itself)."""
        self.cache.close()


def _not_found(digest: str, where: str) -> ArtifactNotFoundError:
    return ArtifactNotFoundError(
        f"artifact {digest} is not in the store {where}",
        hint="run the pipeline again (without --only/--from) to recompute it",
    )


_CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError")
_CONNECTION_ERRORS = ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError")


def _hint_for(exc: BaseException, url: str) -> str:
    """Say how to fix a remote store failure, by the kind of exception (no botocore import)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = str(exc)
    if names & set(_CREDENTIAL_ERRORS) or "Unable to locate credentials" in text:
        return (
            "no credentials for the artifact store: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment of `cellpipe run`; "
            "credentials never go in cellpipe.toml"
        )
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return f"the credentials in the environment may not read and write {url}"
    if names & set(_CONNECTION_ERRORS) or isinstance(exc, ConnectionError | TimeoutError):
        return (
            "the S3 endpoint cannot be reached: check the network and "
            "CELLPIPE_S3_ENDPOINT_URL (or s3_endpoint_url in cellpipe.toml)"
        )
    return (
        "check the artifacts URL, the credentials and the endpoint "
        "(CELLPIPE_S3_ENDPOINT_URL for S3-compatible servers)"
    )


def _missing_package(url: str, exc: ImportError) -> StorageError:
    return StorageError(
        f"cannot open the artifact store {url}: {exc}",
        hint="install the team storage extras: pip install 'cellpipe[team]'",
    )
