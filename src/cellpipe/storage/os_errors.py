"""What a failed write or a damaged database means to the user: OS and SQLite errors translated.

Owns: `storage_error_for`, which turns an ``OSError`` of a write (disk full, quota, file size
limit, read-only file system, permission denied) into a `StorageError` naming the path and
how to fix it, `sqlite_storage_error`, the same for ``sqlite3`` errors (damaged file, disk
full, read-only), and `DOCTOR_HINT`. Every write site (artifact store, run folders, the
SQLite adapter, the CLI's last resort) goes through these two, so one condition reads the same
wherever it happens.

Invariants: only conditions the user can act on are translated; anything else returns None and
the caller re-raises the original (a bug stays a bug, with its traceback).

Must not depend on: anything of cellpipe but `cellpipe.errors`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cellpipe.errors import (
    DamagedDatabaseError,
    ReadOnlyStorageError,
    StorageError,
    StorageFullError,
)

if TYPE_CHECKING:
    import sqlite3  # not at run time: step processes import this module through artifacts

__all__ = [
    "DOCTOR_HINT",
    "FULL_ERRNOS",
    "READ_ONLY_ERRNOS",
    "sqlite_storage_error",
    "storage_error_for",
]

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""No space left, disk quota exceeded, file size limit (``ulimit -f``, RLIMIT_FSIZE)."""

READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
"""Read-only file system, or no write permission."""

DOCTOR_HINT = (
    "the artifacts (step outputs, logs, executed notebooks) are separate files and are "
    "intact; run `cellpipe doctor` to check the project and `cellpipe doctor --repair` to "
    "move the damaged database aside (it is kept, never deleted) and rebuild the run "
    "records from the artifact store"
)

# SQLite primary result codes (the low byte of the extended code in `sqlite_errorcode`).
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
_SQLITE_IOERR_READS = frozenset({266, 522})  # SQLITE_IOERR_READ, SQLITE_IOERR_SHORT_READ


def _full_error(path: str, detail: str, *, action: str) -> StorageFullError:
    return StorageFullError(
        f"disk full: cannot {action} {path}: {detail}",
        path=path,
        hint="free some space on that file system (or raise the quota / file size limit, "
        "`ulimit -f`); what finished before is kept, so run the same command again "
        "afterwards",
    )


def _read_only_error(
    path: str, detail: str, *, action: str, kind: str = "read-only"
) -> ReadOnlyStorageError:
    return ReadOnlyStorageError(
        f"{kind}: cannot {action} {path}: {detail}",
        path=path,
        hint=f"make {Path(path).absolute().parent} writable for this user "
        "(`chmod u+w`; for the project's store `chmod -R u+w .cellpipe`) or remount the file "
        "system read-write, or keep the store elsewhere with CELLPIPE_DB_URL and "
        "CELLPIPE_ARTIFACTS_URL; read commands (runs, show, why, lineage, check) still work",
    )


def storage_error_for(
    exc: OSError, path: str | os.PathLike[str] | None = None, *, action: str = "write"
) -> StorageError | None:
    """Return the `StorageError` an ``OSError`` of a write means, or None if it is not one.

    Args:
        exc: the error of the write.
        path: the file or folder written (default: the error's own ``filename``).
        action: what was being done, for the message (``"write"``, ``"create"``, ...).

    Returns:
        `StorageFullError` for ENOSPC, EDQUOT and EFBIG; `ReadOnlyStorageError` for EROFS,
        EACCES and EPERM; None for any other error.
    """
    where = os.fspath(path) if path is not None else str(exc.filename or "(unknown path)")
    detail = exc.strerror or str(exc)
    if exc.errno in FULL_ERRNOS:
        return _full_error(where, detail, action=action)
    if exc.errno == errno.EROFS:
        return _read_only_error(where, detail, action=action)
    if exc.errno in READ_ONLY_ERRNOS:  # EACCES, EPERM: the folder or file is not writable
        return _read_only_error(where, detail, action=action, kind="permission denied")
    return None


def sqlite_storage_error(exc: sqlite3.Error, path: str) -> StorageError | None:
    """Return the `StorageError` a ``sqlite3`` error on the database ``path`` means, or None.

    A damaged file (``malformed``, ``file is not a database``) becomes
    `DamagedDatabaseError` with the way out (`DOCTOR_HINT`); a full disk or a write I/O
    error (SQLite reports a file size limit as one) `StorageFullError`; a read-only file
    `ReadOnlyStorageError`. Locks, constraint violations and SQL mistakes are not translated.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or (
        primary is None and ("malformed" in text or "not a database" in text)
    ):
        return DamagedDatabaseError(
            f"the metadata database {path} is damaged ({text})",
            path=path,
            hint=DOCTOR_HINT,
        )
    if primary == _SQLITE_FULL:
        return _full_error(path, text, action="write to the database")
    if primary == _SQLITE_IOERR and code in _SQLITE_IOERR_READS:
        return StorageError(
            f"cannot read the metadata database {path}: {text}",
            hint="check the disk (`dmesg`), then run `cellpipe doctor`",
        )
    if primary == _SQLITE_IOERR:
        return _full_error(
            path,
            f"{text} (SQLite could not write; usually no space left or a file size limit)",
            action="write to the database",
        )
    if primary == _SQLITE_READONLY:
        return _read_only_error(path, text, action="write to the database")
    if primary == _SQLITE_CANTOPEN:  # a missing folder stays the store's "cannot open" error
        file = Path(path).absolute()
        if file.parent.is_dir() and not os.access(file.parent, os.W_OK):
            return _read_only_error(path, text, action="create")
    return None
