"""Which store implementation serves a URL: the one table of storage backends.

Owns: `ARTIFACT_BACKENDS` and `METADATA_BACKENDS` (URL scheme -> implementation, greppable),
`open_artifact_store`, `open_metadata_store`, `to_sqlalchemy_url`, `ArtifactLocation` (how
another process opens the same artifact store), `preload_artifact_backend` and
`sqlite_database_file`.

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

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from cellpipe.errors import StorageError

if TYPE_CHECKING:
    from cellpipe.storage.artifacts import LocalArtifactStore
    from cellpipe.storage.metadata import SqlMetadataStore
    from cellpipe.storage.remote import FsspecArtifactStore

__all__ = [
    "ARTIFACT_BACKENDS",
    "METADATA_BACKENDS",
    "ArtifactLocation",
    "is_remote_artifact_url",
    "open_artifact_store",
    "open_metadata_store",
    "preload_artifact_backend",
    "sqlite_database_file",
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

_PRELOAD: Mapping[str, tuple[str, ...]] = {
    "s3": ("fsspec", "s3fs"),
}
"""Remote artifact scheme -> the modules its store needs (`preload_artifact_backend`)."""

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
    from cellpipe.storage._urls import redact_url

    return redact_url(url)


# -- the artifact store as step processes see it ----------------------------------------------

_SECRET_OPTIONS = frozenset(
    {
        "key",
        "secret",
        "token",
        "password",
        "session_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "profile",
    }
)
"""Storage options that are credentials: never handed to another process in a job file."""


def is_remote_artifact_url(url: str) -> bool:
    """Return whether ``url`` names a remote artifact store (not a local folder)."""
    return _scheme(url) not in ("", "file")


def preload_artifact_backend(url: str) -> None:
    """Import the packages the store at ``url`` needs, without opening it.

    A fork server calls this once, so that every step process it forks pays for creating
    the store only, not for importing s3fs and botocore. Nothing is connected and no thread
    is started (fsspec's file systems are not fork-safe; each process opens its own).

    Raises:
        StorageError: when the scheme's package is not installed.
    """
    for module in _PRELOAD.get(_scheme(url), ()):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise StorageError(
                f"cannot open the artifact store {url}: {exc}",
                hint="install the team storage extras: pip install 'cellpipe[team]'",
            ) from exc


def _public(value: Any) -> Any:
    """Return ``value`` without credentials and without what JSON cannot carry (None)."""
    if isinstance(value, Mapping):
        kept = {}
        for key, item in value.items():
            if not isinstance(key, str) or key.lower() in _SECRET_OPTIONS:
                continue
            public = _public(item)
            if public is not None or item is None:
                kept[key] = public
        return kept
    if isinstance(value, list | tuple):
        return [_public(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactLocation:
    """Where an artifact store is, in a form another process can open (JSON, no secrets).

    Credentials are left out on purpose: step processes inherit the environment, so they
    find the same AWS variables, profiles or instance credentials as the runner.

    Attributes:
        url: a local folder or ``s3://bucket/prefix``.
        cache_dir: the local read cache of a remote store (empty for a local store).
        storage_options: the non-secret options of a remote store (``endpoint_url``, ...).
    """

    url: str
    cache_dir: str = ""
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def remote(self) -> bool:
        """True when the store is not a local folder."""
        return is_remote_artifact_url(self.url)

    @classmethod
    def of(cls, store: object) -> ArtifactLocation:
        """Return the location of an open store (a local or an fsspec store).

        Raises:
            StorageError: for a store other processes cannot open (an in-memory store).
        """
        from cellpipe.storage.artifacts import LocalArtifactStore

        if isinstance(store, LocalArtifactStore):
            return cls(url=str(store.root.absolute()))
        from cellpipe.storage.remote import FsspecArtifactStore  # imports no fsspec

        if isinstance(store, FsspecArtifactStore):
            return cls(
                url=store.url,
                cache_dir=str(store.cache.root.absolute()),
                storage_options=_public(store.storage_options),
            )
        raise StorageError(
            f"step processes cannot open the artifact store {store!r}",
            hint="run with a local folder or an s3:// URL as the artifact store "
            "(CELLPIPE_ARTIFACTS_URL or artifacts_url in cellpipe.toml)",
        )

    def open(self) -> LocalArtifactStore | FsspecArtifactStore:
        """Open the store (see `open_artifact_store`)."""
        return open_artifact_store(
            self.url, cache_dir=Path(self.cache_dir), storage_options=self.storage_options
        )


def sqlite_database_file(url: str) -> Path | None:
    """Return the absolute file of a ``sqlite:///`` metadata URL (None for other databases).

    Snapshots use it to keep away from a live database that sits inside the workspace.
    """
    scheme = _scheme(url)
    if scheme.split("+", 1)[0] != "sqlite":
        return None
    rest = url.split("://", 1)[1]
    if not rest.startswith("/"):
        return None
    path = unquote(rest[1:].split("?", 1)[0])
    if not path or path == ":memory:":
        return None
    return Path(path).absolute()
