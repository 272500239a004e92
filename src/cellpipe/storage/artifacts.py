"""Artifact stores: bytes by content address, on local disk or in memory.

Owns: `LocalArtifactStore` (the default, under ``.cellpipe/artifacts/``), `MemoryArtifactStore`
(the fake that tests and the contract suite use), `digest_file` and `parse_digest`.

Layout of a local store::

    root/                        created 0700 (folders cellpipe creates are private)
      sha256/9f/9f2c…e1          the artifact (full 64-hex name), mode 0400 (see below)
      sha256/9f/9f2c…e1.ok       verification stamp: "size mtime_ns ctime_ns inode"
      tmp/                       files being written; same file system as sha256/

Permissions: artifacts are private to the user who stored them. Folders the store creates are
0700 and artifact files 0400, plus the read bits for group and others that the store's root
folder itself grants: a store cellpipe created stays private, and a team folder that an
administrator made group-readable (``chmod 2750``, ``artifacts_url``) stays readable to the
team. cellpipe never changes the mode of a folder it did not create.

Invariants:
    * an artifact file is named by the SHA-256 of its bytes and never changes once visible
      (a copy of a workspace file is a copy-on-write clone where the file system can make
      one, `clone_file`, never a hard link, which an in-place edit would change):
      it is written under ``tmp/`` and published with ``os.link`` (which refuses to replace an
      existing file) or, where hard links are unsupported, ``os.replace`` after an existence
      check (a racing writer has the same bytes, so the replacement is harmless);
    * a reader never sees a half-written artifact;
    * storing bytes whose artifact file exists but no longer matches its digest (a corrupted
      file) replaces that file: the new bytes are known good, the old ones are not;
    * ``local_path`` and ``open`` return bytes that match the digest. Verification hashes the
      whole file, which for a 1 GiB array costs about half a second, so a stamp beside the
      artifact records the file's size, mtime, ctime and inode when it was last known good (we
      stamp at write time, since we hashed the bytes we wrote). While the file's ``stat`` still
      matches its stamp the hash is skipped. Any rewrite, truncation, ``chmod`` or replacement
      changes ``ctime`` or the inode, so it forces a full check. What this does not catch is
      silent media corruption (bit rot) that leaves ``stat`` untouched: use
      ``verify="always"`` (or ``verify(digest)``) for that;
    * a write that fails for lack of space (ENOSPC, EDQUOT, EFBIG) or on a read-only folder
      raises `StorageFullError` / `ReadOnlyStorageError` naming the path, never a bare
      ``OSError`` (`cellpipe.storage.os_errors`).

Must not depend on: serializers, the metadata store, notebooks, the pipeline model, the runner.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import BinaryIO, Literal, ParamSpec, TypeVar

from cellpipe.errors import ArtifactCorruptedError, ArtifactNotFoundError
from cellpipe.storage.os_errors import storage_error_for
from cellpipe.storage.protocols import ArtifactDigest

__all__ = [
    "CHUNK_SIZE",
    "PRIVATE_DIR_MODE",
    "LocalArtifactStore",
    "MemoryArtifactStore",
    "clone_file",
    "digest_bytes",
    "digest_file",
    "make_private_dir",
    "parse_digest",
]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
"""Bytes per read while hashing or copying (1 MiB)."""

_ALGORITHM = "sha256"
_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
PRIVATE_DIR_MODE = 0o700
"""The mode of the folders cellpipe creates for its state and stores."""


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700; existing folders are untouched.

    (``Path.mkdir(mode=...)`` gives the mode to the last folder only.)
    """
    path = Path(path)
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise


def clone_file(src: BinaryIO, dst: BinaryIO) -> str:
    """Copy ``src`` to ``dst`` (both at offset 0) the cheapest way; return how.

    A copy-on-write clone (``FICLONE``: btrfs, XFS, bcachefs, ZFS 2.2) shares the blocks until
    either side is written, so the copy costs no data I/O and no space; ``copy_file_range``
    copies inside the kernel (and clones on file systems that can, such as XFS or NFS 4.2
    server-side copy); a plain read/write loop is the fallback. Never a hard link: a file
    edited in place would change the stored copy with it.

    Returns:
        ``"clone"``, ``"copy_file_range"`` or ``"copy"``.
    """
    try:
        import fcntl

        fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
    except (OSError, ImportError, AttributeError):
        pass
    else:
        return "clone"
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is not None:
        try:
            while copy_range(src.fileno(), dst.fileno(), 1 << 30):
                pass
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            src.seek(0)
            dst.seek(0)
            dst.truncate()
        else:
            return "copy_file_range"
    shutil.copyfileobj(src, dst, CHUNK_SIZE)
    return "copy"


_FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _write_errors(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Translate a full disk or a read-only folder in a store's write into a `StorageError`."""

    @wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            store = args[0]
            where = exc.filename or getattr(store, "root", None)
            translated = storage_error_for(exc, where, action="store an artifact in")
            if translated is None:
                raise
            raise translated from exc

    return wrapper


def parse_digest(digest: str) -> str:
    """Return the 64-hex part of ``sha256:<hex>``.

    Raises:
        ValueError: if ``digest`` is not of that form.
    """
    match = _DIGEST_RE.fullmatch(digest)
    if match is None:
        raise ValueError(f"not an artifact digest: {digest!r} (expected 'sha256:<64 hex>')")
    return match.group(1)


def digest_bytes(data: bytes) -> ArtifactDigest:
    """Return the digest of ``data``."""
    return ArtifactDigest(f"{_ALGORITHM}:{hashlib.sha256(data).hexdigest()}")


def digest_file(path: Path) -> ArtifactDigest:
    """Return the digest of the file's bytes, read once in large chunks.

    Args:
        path: the file to hash.

    Returns:
        ``sha256:<64 hex>``.
    """
    with Path(path).open("rb") as f:
        return ArtifactDigest(f"{_ALGORITHM}:{hashlib.file_digest(f, _ALGORITHM).hexdigest()}")


def _copy_hashing(src: BinaryIO, dst: BinaryIO) -> str:
    """Copy ``src`` to ``dst`` in 1 MiB chunks, hashing as it goes; return the hex digest."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    while True:
        n = src.readinto(view)  # type: ignore[attr-defined]
        if not n:
            break
        chunk = view[:n]
        h.update(chunk)
        dst.write(chunk)
    return h.hexdigest()


def _stamp_of(st: os.stat_result) -> str:
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"


def _corrupted(digest: str, path: Path, actual: str) -> ArtifactCorruptedError:
    return ArtifactCorruptedError(
        f"artifact {digest} is corrupted: {path} now hashes to {actual}",
        hint=f"delete {path} and run again; the step that produced it will be recomputed",
    )


def _not_found(digest: str, where: str) -> ArtifactNotFoundError:
    return ArtifactNotFoundError(
        f"artifact {digest} is not in the store {where}",
        hint="run the pipeline again (without --only/--from) to recompute it",
    )


class LocalArtifactStore:
    """Content-addressed artifacts in a local folder.

    Args:
        root: the store folder (``.cellpipe/artifacts``); created on first write.
        verify: ``"stat"`` (default) re-hashes a file on read only when its ``stat`` changed
            since it was last known good; ``"always"`` hashes it on every read.

    Example::

        store = LocalArtifactStore(Path(".cellpipe/artifacts"))
        digest = store.put_bytes(b"hello")
        store.local_path(digest).read_bytes()  # b"hello"
    """

    def __init__(self, root: Path, *, verify: Literal["stat", "always"] = "stat") -> None:
        self.root = Path(root)
        self.verify_mode = verify
        self._objects = self.root / _ALGORITHM
        self._tmp = self.root / "tmp"
        self._file_mode: int | None = None
        self.copies: dict[str, int] = {}
        """How workspace files were copied in (`clone_file`'s answer -> count)."""

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------------------

    def path_for(self, digest: ArtifactDigest) -> Path:
        """Return where the artifact lives (whether or not it exists)."""
        hex_ = parse_digest(digest)
        return self._objects / hex_[:2] / hex_

    def scratch_dir(self) -> Path:
        """Return a folder on the store's file system for files about to be stored.

        A file written here and passed to ``put_file(path, move=True)`` is published by a
        rename, without being copied.
        """
        make_private_dir(self._tmp)
        return self._tmp

    def file_mode(self) -> int:
        """Return the mode of new artifact files: 0400 plus the root folder's read bits."""
        if self._file_mode is None:
            make_private_dir(self.root)
            self._file_mode = 0o400 | (self.root.stat().st_mode & 0o044)
        return self._file_mode

    # -- writing -----------------------------------------------------------------------------

    @_write_errors
    def put_bytes(self, data: bytes) -> ArtifactDigest:
        """Store ``data`` (idempotent) and return its digest."""
        digest = digest_bytes(data)
        if self._has_good(digest):
            return digest
        fd, tmp_name = tempfile.mkstemp(dir=self.scratch_dir(), prefix="put-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self._publish(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        return digest

    @_write_errors
    def put_file(self, path: Path, *, move: bool = False) -> ArtifactDigest:
        """Store the file's bytes (idempotent) and return their digest.

        Args:
            path: the file to store.
            move: the caller gives the file up. When it is on the store's file system (see
                `scratch_dir`) it is hashed in one pass and renamed into place, so a large
                file is read once and never copied; otherwise it is copied and then deleted.

        Returns:
            The digest of the file's bytes.
        """
        src = Path(path)
        if move and self._same_device(src):
            digest = digest_file(src)
            if self._has_good(digest):
                src.unlink()
                return digest
            try:
                self._publish(src, digest)
            finally:
                src.unlink(missing_ok=True)
            return digest
        fd, tmp_name = tempfile.mkstemp(dir=self.scratch_dir(), prefix="put-")
        tmp = Path(tmp_name)
        try:
            with src.open("rb") as fin, os.fdopen(fd, "w+b") as fout:
                # The copy is hashed, not the source: a writer changing the source meanwhile
                # cannot make the stored bytes differ from their digest.
                how = clone_file(fin, fout)
                self.copies[how] = self.copies.get(how, 0) + 1
                fout.flush()
                fout.seek(0)
                digest = ArtifactDigest(
                    f"{_ALGORITHM}:{hashlib.file_digest(fout, _ALGORITHM).hexdigest()}"
                )
            if not self._has_good(digest):
                self._publish(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        if move:
            src.unlink()
        return digest

    @_write_errors
    def adopt(self, path: Path, digest: ArtifactDigest) -> None:
        """Move a file whose bytes the caller has just hashed into place as ``digest``.

        For stores that fill this one as a cache (`FsspecArtifactStore` hashes while it
        downloads), so a large file is not read a second time. The caller vouches for the
        digest; ``path`` must be in `scratch_dir` and is gone afterwards.

        Args:
            path: a file in `scratch_dir` whose bytes hash to ``digest``.
            digest: the digest the caller computed.
        """
        parse_digest(digest)
        try:
            if not self.exists(digest):
                self._publish(Path(path), digest)
        finally:
            Path(path).unlink(missing_ok=True)

    def remove(self, digest: ArtifactDigest) -> None:
        """Delete the artifact and its stamp if present (to drop a bad cached copy)."""
        path = self.path_for(digest)
        self._stamp_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def _same_device(self, src: Path) -> bool:
        try:
            return src.stat().st_dev == self.scratch_dir().stat().st_dev
        except OSError:
            return False

    def _has_good(self, digest: ArtifactDigest) -> bool:
        """Return whether the artifact exists with the right bytes; remove it if corrupted."""
        try:
            self.local_path(digest)
        except ArtifactNotFoundError:
            return False
        except ArtifactCorruptedError:
            path = self.path_for(digest)
            logger.warning("replacing corrupted artifact %s", path)
            path.unlink(missing_ok=True)  # missing: another writer repaired it first
            return False
        return True

    def _publish(self, tmp: Path, digest: ArtifactDigest) -> None:
        """Make ``tmp`` visible as the artifact ``digest``; never replaces an existing one."""
        final = self.path_for(digest)
        make_private_dir(final.parent)
        tmp.chmod(self.file_mode())
        try:
            os.link(tmp, final)
        except FileExistsError:
            return  # another writer won the race with the same bytes
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise
            if final.exists():
                return
            # No hard links here: a racing writer has identical bytes, so replacing is harmless.
            tmp.replace(final)
        # Unlinking tmp changes the inode's ctime, so the stamp is taken after it.
        tmp.unlink(missing_ok=True)
        self._write_stamp(final)

    def _stamp_path(self, path: Path) -> Path:
        return path.with_name(path.name + ".ok")

    def _write_stamp(self, path: Path) -> None:
        stamp = self._stamp_path(path)
        try:
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".stamp-")
            with os.fdopen(fd, "w") as f:
                f.write(_stamp_of(path.stat()))
            Path(tmp_name).replace(stamp)
        except OSError:  # a stamp is an optimisation; without it we just hash next time
            logger.debug("could not write verification stamp %s", stamp, exc_info=True)

    # -- reading -----------------------------------------------------------------------------

    def exists(self, digest: ArtifactDigest) -> bool:
        """Return whether the artifact is in the store."""
        return self.path_for(digest).is_file()

    def local_path(self, digest: ArtifactDigest) -> Path:
        """Return the artifact's file, checked against the digest (see the module docstring).

        Raises:
            ArtifactNotFoundError: if the store does not have it.
            ArtifactCorruptedError: if the bytes no longer match the digest.
        """
        path = self.path_for(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise _not_found(digest, str(self.root)) from None
        if self.verify_mode == "stat":
            try:
                if self._stamp_path(path).read_text() == _stamp_of(st):
                    return path
            except OSError:
                pass
        self.verify(digest)
        return path

    def verify(self, digest: ArtifactDigest) -> None:
        """Hash the artifact's file now and refresh its stamp.

        Raises:
            ArtifactNotFoundError: if the store does not have it.
            ArtifactCorruptedError: if the bytes no longer match the digest.
        """
        path = self.path_for(digest)
        try:
            actual = digest_file(path)
        except FileNotFoundError:
            raise _not_found(digest, str(self.root)) from None
        if actual != digest:
            raise _corrupted(digest, path, actual)
        self._write_stamp(path)

    def open(self, digest: ArtifactDigest) -> BinaryIO:
        """Open the artifact for reading (checked like `local_path`).

        Raises:
            ArtifactNotFoundError: if the store does not have it.
            ArtifactCorruptedError: if the bytes no longer match the digest.
        """
        return self.local_path(digest).open("rb")

    def close(self) -> None:
        """Release resources (none for a local store; present for symmetry)."""


class MemoryArtifactStore:
    """Artifacts in a dict: the fake for tests, with the same contract as the real stores.

    ``local_path`` writes the bytes to a private temporary folder, removed by `close`.
    """

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self._spill: Path | None = None
        self._finalizer: weakref.finalize[..., MemoryArtifactStore] | None = None

    def put_bytes(self, data: bytes) -> ArtifactDigest:
        """Store ``data`` (idempotent) and return its digest."""
        digest = digest_bytes(data)
        self.blobs.setdefault(digest, bytes(data))
        return digest

    def put_file(self, path: Path, *, move: bool = False) -> ArtifactDigest:
        """Store the file's bytes (idempotent); with ``move`` delete the file afterwards."""
        src = Path(path)
        digest = self.put_bytes(src.read_bytes())
        if move:
            src.unlink()
        return digest

    def exists(self, digest: ArtifactDigest) -> bool:
        """Return whether the artifact is in the store."""
        return digest in self.blobs

    def _checked(self, digest: ArtifactDigest) -> bytes:
        parse_digest(digest)
        try:
            data = self.blobs[digest]
        except KeyError:
            raise _not_found(digest, "(memory)") from None
        actual = digest_bytes(data)
        if actual != digest:
            raise _corrupted(digest, Path(f"<memory>/{digest}"), actual)
        return data

    def open(self, digest: ArtifactDigest) -> BinaryIO:
        """Open the artifact for reading; raises like `local_path`."""
        return io.BytesIO(self._checked(digest))

    def local_path(self, digest: ArtifactDigest) -> Path:
        """Return a temporary file with the artifact's bytes, checked against the digest.

        Raises:
            ArtifactNotFoundError: if the store does not have it.
            ArtifactCorruptedError: if the bytes no longer match the digest.
        """
        data = self._checked(digest)
        if self._spill is None:
            self._spill = Path(tempfile.mkdtemp(prefix="cellpipe-memstore-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._spill), True)
        path = self._spill / parse_digest(digest)
        if not path.exists():
            path.write_bytes(data)
        return path

    def close(self) -> None:
        """Remove the temporary folder used by `local_path`."""
        if self._finalizer is not None:
            self._finalizer()
        self._spill = None
        self._finalizer = None
