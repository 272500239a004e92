"""Which store implementation serves a URL: the one table of storage backends.

Owns: `ARTIFACT_BACKENDS` and `METADATA_BACKENDS` (URL scheme -> implementation, greppable),
`open_artifact_store`, `open_metadata_store` and `to_sqlalchemy_url`.

=========================  ===========================================================
URL                        store
=========================  ===========================================================
``/path``, ``file:///p``   `LocalArtifactStore` (the default, ``.cellpipe/artifacts``)
``s3://bucket/prefix``     `FsspecArtifactStore` via s3fs (AWS, MinIO, Ceph, R2, ...)
``sqlite:///path.db``      `SqlMetadataStore` on SQLite (the default)
``postgresql://...``       `SqlMetadataStore` on PostgreSQL through psycopg 3
=========================  ===========================================================

Invariants: adding a backend is one entry in a table here; implementations (and their
optional packages: s3fs, psycopg) are imported only when a URL needs them, so importing this
module stays cheap. An unknown scheme is an error that lists the known ones.

Must not depend on: config (callers pass URLs and options in), the runner, notebooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cellpipe.errors import StorageError

if TYPE_CHECKING:
    from cellpipe.storage.artifacts import LocalArtifactStore
    from cellpipe.storage.metadata import SqlMetadataStore
    from cellpipe.storage.remote import FsspecArtifactStore

__all__ = [
    "ARTIFACT_BACKENDS",
    "METADATA_BACKENDS",
    "open_artifact_store",
    "open_metadata_store",
    "to_sqlalchemy_url",
]


def _open_local(url: str, cache_dir: Path, options: Mapping[str, Any]) -> LocalArtifactStore:
    from cellpipe.storage.artifacts import LocalArtifactStore

    path = url.removeprefix("file://") if url.startswith("file://") else url
    return LocalArtifactStore(Path(path))


def _open_fsspec(url: str, cache_dir: Path, options: Mapping[str, Any]) -> FsspecArtifactStore:
    from cellpipe.storage.remote import FsspecArtifactStore

    return FsspecArtifactStore(url, cache_dir=cache_dir, storage_options=options)


ARTIFACT_BACKENDS: Mapping[
    str, Callable[[str, Path, Mapping[str, Any]], LocalArtifactStore | FsspecArtifactStore]
] = {
    "": _open_local,  # a plain path
    "file": _open_local,
    "s3": _open_fsspec,
}
"""Artifact store URL scheme -> opener ``(url, cache_dir, storage_options) -> store``."""

METADATA_BACKENDS: Mapping[str, str] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",  # the spelling Heroku and libpq accept
    "postgresql+psycopg": "postgresql+psycopg",
}
"""Metadata store URL scheme -> the SQLAlchemy dialect+driver that serves it."""


def _scheme(url: str) -> str:
    if "://" not in url:
        return ""
    return url.split("://", 1)[0].lower()


def open_artifact_store(
    url: str,
    *,
    cache_dir: Path,
    storage_options: Mapping[str, Any] | None = None,
) -> LocalArtifactStore | FsspecArtifactStore:
    """Open the artifact store at ``url``.

    Args:
        url: a local folder (plain path or ``file://``) or ``s3://bucket/prefix``.
        cache_dir: where a remote store keeps verified local copies (unused for local stores).
        storage_options: options for a remote store's file system (``endpoint_url``,
            credentials); ignored by local stores.

    Returns:
        The store; close it with ``close()``.

    Raises:
        StorageError: for an unknown scheme, or when the scheme's package is not installed.

    Example::

        store = open_artifact_store("s3://team/cellpipe", cache_dir=Path(".cellpipe/cache"))
    """
    scheme = _scheme(url)
    opener = ARTIFACT_BACKENDS.get(scheme)
    if opener is None:
        known = ", ".join(f"{s}://" for s in ARTIFACT_BACKENDS if s) + ", or a local path"
        raise StorageError(
            f"unsupported artifact store URL {url!r} (scheme {scheme!r})",
            hint=f"use {known} in CELLPIPE_ARTIFACTS_URL or cellpipe.toml",
        )
    return opener(url, cache_dir, dict(storage_options or {}))


def to_sqlalchemy_url(url: str) -> str:
    """Return the SQLAlchemy URL for a metadata store URL.

    ``postgresql://`` (and ``postgres://``) become ``postgresql+psycopg://``, because
    SQLAlchemy's default PostgreSQL driver is psycopg2 and cellpipe ships psycopg 3. A URL
    that names a driver (``postgresql+psycopg2://``) is kept as given.

    Raises:
        StorageError: for a scheme that is not a metadata backend.
    """
    scheme = _scheme(url)
    base = scheme.split("+", 1)[0]
    if scheme in METADATA_BACKENDS:
        return METADATA_BACKENDS[scheme] + url[len(scheme) :]
    if base in ("sqlite", "postgresql"):
        return url
    known = ", ".join(f"{s}://" for s in METADATA_BACKENDS if "+" not in s)
    raise StorageError(
        f"unsupported metadata store URL {_redact(url)!r} (scheme {scheme!r})",
        hint=f"use {known} in CELLPIPE_DB_URL or cellpipe.toml",
    )


def open_metadata_store(url: str) -> SqlMetadataStore:
    """Open (and migrate, if needed) the metadata store at ``url``.

    Args:
        url: ``sqlite:///path/to/cellpipe.db`` or ``postgresql://user:pass@host/db``.

    Returns:
        The store; close it with ``close()``.

    Raises:
        StorageError: for an unknown scheme, a missing driver or an unreachable database.
        SchemaVersionError: if the database was written by a newer cellpipe.
    """
    from cellpipe.storage.metadata import SqlMetadataStore

    return SqlMetadataStore(to_sqlalchemy_url(url))


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
