"""External data for steps: ``cellpipe.data(url)`` fetches a file once and keeps it in the store.

Owns: `fetch_data` (the one function ``cellpipe.data`` calls), the per-project source index
(``.cellpipe/data/sources.json``: url -> the versions seen, each with the digest of its bytes),
`DATA_INPUTS_NAME` (where a step records what it fetched, in its scratch folder, for the
orchestrator to put in the run record) and `DataSourceWarning`.

How a call goes:

1. Unless ``refresh=True``, ask the source for its version (a HEAD request over HTTP, a
   ``stat`` for local files, fsspec's ``info()`` for other schemes, a HEAD object on S3): the
   ETag when there is one, otherwise size and modification time. A server that refuses HEAD
   gets a conditional GET (``If-None-Match`` / ``If-Modified-Since`` of the newest stored
   version): 304 reuses the stored copy. When that version is already in the index and
   its bytes are in the store, nothing is downloaded.
2. Otherwise download the bytes (a GET) into the artifact store, and add the version.
3. When the source cannot be reached, the newest recorded version is used, with a
   `DataSourceWarning`: offline re-runs work from the store.

Before the runner reuses a cached step run that read sources this way, it asks each source
for its version again (`source_version`: the same one ``info()`` call, no download): a
changed version re-runs the step (``miss: data source URL changed``); ``--offline`` skips
the check, and a step that runs in an offline run uses the newest stored copy of a source
without asking it (only a source never fetched is reached).
4. The returned path is a read-only file with the source's name (a symlink into the store),
   so tools that look at the suffix (``pd.read_csv("x.csv.gz")``) work.

Invariants: the bytes behind a returned path never change (content-addressed, mode 0444); the
index is updated under a file lock, so parallel steps can fetch at once; a source without an
ETag, a modification time or a size is fetched every time (nothing identifies its version).
The bytes go to the run's artifact store, whatever its kind: inside a step the step process's
open store (a remote store keeps a verified copy in its local read cache, which the returned
path points into); the index stays per machine, in the project's ``.cellpipe`` folder.

Local paths, ``file://`` and ``http(s)://`` need only the standard library (urllib), so
``cellpipe.data`` works in the default install; fsspec (the ``team`` extra) is imported only
for other schemes (``s3://``, ``gs://``, ...), and its absence is a `DataError` naming the
extra.

Must not depend on: notebooks, the KFP compiler, config, the CLI or the UI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cellpipe.errors import CellpipeError
from cellpipe.runner.context import current_step
from cellpipe.storage.artifacts import LocalArtifactStore, parse_digest
from cellpipe.storage.backends import is_remote_artifact_url
from cellpipe.storage.protocols import ArtifactDigest, ArtifactStore

__all__ = [
    "DATA_INPUTS_NAME",
    "DataInput",
    "DataSourceWarning",
    "fetch_data",
    "read_data_inputs",
    "source_version",
]

logger = logging.getLogger(__name__)

DATA_INPUTS_NAME = "data-inputs.jsonl"
"""One JSON line per ``cellpipe.data`` call of a step, in the step's scratch folder."""
_INDEX = Path("data") / "sources.json"
_FILES = Path("data") / "files"


class DataSourceWarning(UserWarning):
    """A data source could not be reached; the stored copy was used instead."""


class DataError(CellpipeError):
    """An external data file could not be fetched, and there is no stored copy."""

    headline = "cannot fetch data"


@dataclass(frozen=True, slots=True, kw_only=True)
class DataInput:
    """One fetched (or reused) external file.

    Attributes:
        url: the source, as the step named it (local paths made absolute).
        version: ``etag:...``, ``size:N,mtime:T`` or ``unversioned:<digest>``.
        digest: the stored bytes.
        size: their size.
        fetched_at: when they were downloaded (UTC).
        path: a local read-only file with the bytes.
    """

    url: str
    version: str
    digest: ArtifactDigest
    size: int
    fetched_at: datetime
    path: Path

    def to_json(self) -> dict[str, Any]:
        """Return the JSON line recorded for the orchestrator."""
        return {
            "url": self.url,
            "version": self.version,
            "digest": self.digest,
            "size": self.size,
            "fetched_at": self.fetched_at.isoformat(),
        }


def _normalise(url: str | os.PathLike[str]) -> str:
    text = os.fspath(url)
    if "://" not in text:
        return str(Path(text).expanduser().resolve())
    return text


def _version(info: Mapping[str, Any]) -> str | None:
    for key in ("ETag", "etag", "Etag", "e_tag"):
        value = info.get(key)
        if value:
            return f"etag:{str(value).strip()}"
    for key in ("Content-MD5", "Digest", "md5", "checksum"):
        value = info.get(key)
        if value:
            return f"checksum:{value}"
    mtime = None
    for key in ("mtime", "LastModified", "last_modified", "Last-Modified", "modified", "updated"):
        if info.get(key) is not None:
            mtime = info[key]
            break
    size = info.get("size")
    if mtime is None or size is None:
        return None
    if isinstance(mtime, datetime):
        mtime = mtime.isoformat()
    return f"size:{size},mtime:{mtime}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # no flock (Windows): last writer wins, entries are only hints
            pass
        yield
    finally:
        os.close(fd)


def _read_index(path: Path) -> dict[str, list[dict[str, Any]]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_index(path: Path, index: Mapping[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
    tmp.replace(path)


def _local_file(state_dir: Path, store: ArtifactStore, url: str, digest: str) -> Path:
    """Return a read-only path with the source's file name pointing at the stored bytes."""
    target = store.local_path(ArtifactDigest(digest))
    name = Path(urlsplit(url).path).name or "data"
    link = state_dir / _FILES / parse_digest(digest)[:16] / name
    try:
        if link.resolve() == target.resolve() and link.exists():
            return link
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(link)
    except OSError:  # no symlinks here: the store's own file is read-only too
        return target
    return link


def _scratch_dir(store: ArtifactStore, state_dir: Path) -> Path:
    """Return where a download is staged: the store's scratch folder, when it has one.

    A file there is published by a rename (`LocalArtifactStore`) or lands in the read cache
    by a rename after its upload (`FsspecArtifactStore`).
    """
    scratch = getattr(store, "scratch_dir", None)
    if callable(scratch):
        return Path(scratch())
    folder = state_dir / "data" / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


_HTTP_TIMEOUT = 60.0
_TEAM_HINT = (
    "install the file systems for other URL schemes: pip install 'cellpipe[team]' "
    "(fsspec and s3fs), plus the fsspec package for the scheme (gcsfs for gs://, ...)"
)


class _Source:
    """One data source: a local file, an HTTP(S) URL (urllib) or any other fsspec URL."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None) -> None:
        self.url = url
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        self.kind = "local" if scheme in ("", "file") else scheme
        self.path = url
        self.fs: Any = None
        if self.kind == "local":
            if scheme == "file":
                from urllib.request import url2pathname

                self.path = url2pathname(urlsplit(url).path)
        elif self.kind not in ("http", "https"):
            try:
                import fsspec
            except ImportError as exc:
                raise DataError(
                    f"cannot open {url}: the {scheme}:// scheme needs fsspec, which is not "
                    "installed (local paths, file:// and http(s):// work without it)",
                    hint=_TEAM_HINT,
                ) from exc
            try:
                self.fs, self.path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
            except (ImportError, ValueError) as exc:
                raise DataError(
                    f"cannot open {url}: {exc}",
                    hint="install the fsspec implementation for this URL scheme (s3fs for "
                    "s3://, gcsfs for gs://)",
                ) from exc

    def info(self) -> dict[str, Any]:
        """Return what identifies the source's version (one stat or HEAD request)."""
        if self.kind == "local":
            st = Path(self.path).stat()
            return {"size": st.st_size, "mtime": st.st_mtime}
        if self.fs is not None:
            return dict(self.fs.info(self.path))
        from urllib.request import Request, urlopen

        with urlopen(Request(self.url, method="HEAD"), timeout=_HTTP_TIMEOUT) as response:
            return _http_info(response.headers)

    def open(self, headers: Mapping[str, str] | None = None) -> Any:
        """Return a binary stream of the bytes (a response over HTTP)."""
        if self.kind == "local":
            return Path(self.path).open("rb")
        if self.fs is not None:
            return self.fs.open(self.path, "rb")
        from urllib.request import Request, urlopen

        try:
            return urlopen(Request(self.url, headers=dict(headers or {})), timeout=_HTTP_TIMEOUT)
        except Exception as exc:
            if getattr(exc, "code", None) == 304:  # urllib raises for a conditional GET's 304
                return _NotModified()
            raise


class _NotModified:
    """The answer to a conditional GET whose bytes did not change (HTTP 304)."""

    status = 304
    headers: Mapping[str, str] = {}

    def close(self) -> None:
        """Nothing to close."""


def _http_info(headers: Any) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if headers.get("ETag"):
        info["ETag"] = headers["ETag"]
    if headers.get("Last-Modified"):
        info["Last-Modified"] = headers["Last-Modified"]
    length = headers.get("Content-Length")
    if length is not None and str(length).isdigit():
        info["size"] = int(length)
    return info


def _head_refused(exc: BaseException) -> bool:
    """True when an HTTP server answered, but not to HEAD (405, 501, some 403s)."""
    from urllib.error import HTTPError

    return isinstance(exc, HTTPError) and exc.code in (403, 405, 501)


def _conditional_headers(known: list[dict[str, Any]]) -> dict[str, str]:
    """If-None-Match / If-Modified-Since for the newest stored version of a source."""
    if not known:
        return {}
    version = str(known[-1]["version"])
    if version.startswith("etag:"):
        return {"If-None-Match": version.removeprefix("etag:")}
    if version.startswith("size:") and ",mtime:" in version:
        mtime = version.partition(",mtime:")[2]
        if not mtime.replace(".", "", 1).isdigit():  # an HTTP date, not a float
            return {"If-Modified-Since": mtime}
    return {}


def _download(
    source: _Source,
    store: ArtifactStore,
    url: str,
    scratch: Path,
    stream: Any = None,
) -> tuple[ArtifactDigest, int]:
    fd, tmp_name = tempfile.mkstemp(dir=scratch, prefix="data-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, stream or source.open() as src:
            while chunk := src.read(1024 * 1024):
                out.write(chunk)
        size = tmp.stat().st_size
        return store.put_file(tmp, move=True), size
    except CellpipeError:
        raise
    except Exception as exc:
        raise DataError(
            f"cannot download {url}: {type(exc).__name__}: {exc}",
            hint="check the URL and your network; pass refresh=False to use a stored copy",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def fetch_data(
    url: str | os.PathLike[str],
    *,
    refresh: bool = False,
    state_dir: Path,
    store: ArtifactStore | None = None,
    artifact_root: Path | None = None,
    storage_options: Mapping[str, Any] | None = None,
    offline: bool = False,
) -> DataInput:
    """Return a local copy of ``url``, fetched once per source version.

    Args:
        url: any fsspec URL (``https://...``, ``s3://bucket/key``, ``file:///...``) or a
            local path.
        refresh: download again even when the recorded version looks current.
        state_dir: the project's ``.cellpipe`` folder (the source index lives there).
        store: the artifact store the bytes go to.
        artifact_root: a local artifact store folder, when no ``store`` is given.
        storage_options: passed to fsspec for the source (credentials, endpoint URL).
        offline: use the newest stored copy without asking the source (``--offline``);
            a source with no stored copy is fetched as usual.

    Returns:
        What was fetched or reused; ``.path`` is a read-only local file.

    Raises:
        DataError: when the source cannot be read and no copy is stored.
        ValueError: when neither ``store`` nor ``artifact_root`` is given.
    """
    if store is None:
        if artifact_root is None:
            raise ValueError("fetch_data needs the artifact store (store or artifact_root)")
        store = LocalArtifactStore(Path(artifact_root))
    key = _normalise(url)
    index_path = state_dir / _INDEX
    source = _Source(key, storage_options)
    with _locked(index_path):
        known = _read_index(index_path).get(key, [])
    if offline and not refresh:
        usable = [k for k in known if store.exists(ArtifactDigest(k["digest"]))]
        if usable:
            last = usable[-1]
            return _result(key, last, _local_file(state_dir, store, key, last["digest"]))
    version: str | None = None
    stream: Any = None
    try:
        try:
            version = _version(source.info())
        except Exception as exc:
            if not _head_refused(exc):
                raise
            # No HEAD here: a conditional GET asks for the bytes only if they changed.
            stream = source.open(_conditional_headers(known) if not refresh else {})
            version = _version(_http_info(stream.headers))
    except Exception as exc:  # network errors come in many types (aiohttp, botocore, OSError)
        usable = [k for k in known if store.exists(ArtifactDigest(k["digest"]))]
        if not usable:
            raise DataError(
                f"cannot reach {key} ({type(exc).__name__}: {exc}) and no copy is stored",
                hint="check the URL and the network; once fetched, a copy is kept for offline runs",
            ) from exc
        last = usable[-1]
        message = (
            f"cellpipe.data: cannot reach {key} ({type(exc).__name__}); using the copy of "
            f"version {last['version']} fetched at {last['fetched_at']}"
        )
        logger.warning("%s", message)
        warnings.warn(message, DataSourceWarning, stacklevel=3)
        return _result(key, last, _local_file(state_dir, store, key, last["digest"]))
    if stream is not None and getattr(stream, "status", 200) == 304:
        stream.close()  # not modified: the newest stored copy is current
        usable = [k for k in known if store.exists(ArtifactDigest(k["digest"]))]
        if usable:
            return _result(
                key, usable[-1], _local_file(state_dir, store, key, usable[-1]["digest"])
            )
        stream = source.open()
        version = _version(_http_info(stream.headers))
    if not refresh and version is not None:
        for entry in reversed(known):
            if entry["version"] == version and store.exists(ArtifactDigest(entry["digest"])):
                if stream is not None:
                    stream.close()
                return _result(key, entry, _local_file(state_dir, store, key, entry["digest"]))
    digest, size = _download(source, store, key, _scratch_dir(store, state_dir), stream)
    entry = {
        "version": version or f"unversioned:{digest}",
        "digest": digest,
        "size": size,
        "fetched_at": datetime.now(UTC).isoformat(),
    }
    with _locked(index_path):
        index = _read_index(index_path)
        versions = [e for e in index.get(key, []) if e.get("version") != entry["version"]]
        index[key] = [*versions, entry]
        _write_index(index_path, index)
    return _result(key, entry, _local_file(state_dir, store, key, digest))


def source_version(url: str, *, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """Return the version ``url`` has now, as `fetch_data` records it; nothing is downloaded.

    One call: a ``stat`` for a local file, a HEAD request over HTTP, fsspec's ``info()``
    for other schemes (a HEAD object on S3). The runner calls it before it trusts a cache
    hit of a step that read ``url`` through ``cellpipe.data``.

    Args:
        url: the source as recorded (`DataInput.url`).
        storage_options: passed to fsspec (credentials, endpoint URL); by default fsspec's
            own configuration and the environment apply.

    Returns:
        ``etag:...``, ``checksum:...`` or ``size:N,mtime:T``; None when the source offers
        nothing that identifies its version.

    Raises:
        DataError: the source cannot be reached (or its file system cannot be loaded).
    """
    try:
        source = _Source(url, storage_options)
        try:
            return _version(source.info())
        except Exception as exc:
            if not _head_refused(exc):
                raise
            # No HEAD here: a GET's headers carry the version; the body is not read.
            response = source.open()
            try:
                return _version(_http_info(response.headers))
            finally:
                response.close()
    except DataError:
        raise
    except Exception as exc:  # network errors come in many types (OSError, botocore, ...)
        raise DataError(
            f"cannot check {url}: {type(exc).__name__}: {exc}",
            hint="check the URL and the network, or run with --offline to use the stored copy",
        ) from exc


def _result(url: str, entry: Mapping[str, Any], path: Path) -> DataInput:
    return DataInput(
        url=url,
        version=str(entry["version"]),
        digest=ArtifactDigest(entry["digest"]),
        size=int(entry["size"]),
        fetched_at=datetime.fromisoformat(entry["fetched_at"]),
        path=path,
    )


def data(
    url: str | os.PathLike[str],
    *,
    refresh: bool = False,
    state_dir: Path | None = None,
    store: ArtifactStore | None = None,
    artifact_root: Path | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Path:
    """Fetch ``url`` once and return a read-only local path; inside a step, record it.

    Args:
        url: any fsspec URL or local path.
        refresh: download again even when the recorded version looks current.
        state_dir: the project's ``.cellpipe`` folder, required outside a step (inside a step
            it is the one beside the notebook).
        store: the artifact store outside a step (inside a step: the step's store).
        artifact_root: a local artifact store folder outside a step, when no ``store`` is
            given (default: ``state_dir/artifacts``).
        storage_options: passed to fsspec for the source.

    Returns:
        A local file with the bytes.

    Raises:
        DataError: when the source cannot be read and no copy is stored.
        ValueError: outside a step without ``state_dir``.
    """
    context = current_step()
    root: Path | None = None
    if context is not None and (context.artifacts is not None or context.artifact_root):
        state = Path(context.workdir) / ".cellpipe"
        store = context.artifacts
        if store is None:
            if is_remote_artifact_url(context.artifact_root):
                raise DataError(
                    f"step '{context.step}' has no open artifact store ({context.artifact_root})",
                    hint="see the step's log for why the store could not be opened",
                )
            root = Path(context.artifact_root.removeprefix("file://"))
    elif state_dir is not None:
        state = Path(state_dir)
        if store is None:
            root = Path(artifact_root) if artifact_root is not None else state / "artifacts"
    else:
        raise ValueError("cellpipe.data outside a step needs the project's state_dir")
    found = fetch_data(
        url,
        refresh=refresh,
        store=store,
        artifact_root=root,
        state_dir=state,
        storage_options=storage_options,
        offline=context is not None and context.offline,
    )
    if context is not None and context.scratch_dir:
        line = json.dumps(found.to_json()) + "\n"
        with (Path(context.scratch_dir) / DATA_INPUTS_NAME).open("a", encoding="utf-8") as f:
            f.write(line)
    return found.path


def read_data_inputs(scratch_dir: Path) -> list[dict[str, Any]]:
    """Return what a step recorded with ``cellpipe.data`` (last call per URL wins)."""
    path = Path(scratch_dir) / DATA_INPUTS_NAME
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    found: dict[str, dict[str, Any]] = {}
    for line in lines:
        if line.strip():
            item = json.loads(line)
            found[item["url"]] = item
    return list(found.values())
