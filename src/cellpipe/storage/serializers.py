"""Serializers: how a Python value becomes one file and back, chosen by the value's type.

Owns: the `SERIALIZERS` table (the one place serializer names are registered, in priority
order), `serialize`, `deserialize`, `serializer_versions`, `get_serializer`, `type_name`, and
the `SerializationError` messages for values that cannot be stored.

The table, first match wins; a serializer whose ``dump`` raises falls through to the next:

==============  =======  ==========================================================================
name            suffix   values
==============  =======  ==========================================================================
``json``        .json    None/bool/int/float/str, lists and str-keyed dicts of those (exact types,
                         no tuples, no shared or cyclic containers), < 1 MiB encoded; NaN and
                         infinities round-trip (Python's JSON dialect)
``npy``         .npy     ``numpy.ndarray`` (and ``numpy.memmap``) without object fields; loaded
                         memory-mapped **copy-on-write** (``mmap_mode="c"``): the array is
                         writable, writes stay private to the process and never reach the store
``parquet``     .parquet ``pandas.DataFrame`` with unique str column names and no object columns;
                         index, dtypes (string categoricals, tz-aware datetimes, nullable ints)
                         and ``attrs`` round-trip. Anything pyarrow cannot write exactly falls
                         through. A ``DatetimeIndex`` loses its ``freq``. Read back with
                         ``pyarrow.parquet.ParquetFile`` and ``Table.to_pandas`` (the conversion
                         the write checked), like ``pandas.read_parquet`` but without importing
                         ``pyarrow.dataset`` (about 20 ms in every fresh step process)
``joblib``      .joblib  scikit-learn objects, numpy containers (object arrays, masked arrays,
                         Series, Index, dict/list/tuple holding arrays); never pickles a
                         ``__main__`` reference (those fall through to cloudpickle). Version 2
                         writes one standard pickle (protocol 5, buffers in-band) with the C
                         pickler, behind a 22-byte tag that is itself valid pickle, so
                         ``joblib.load`` and ``pickle.load`` both read the file; it is about 8
                         times faster both ways than joblib's pure-Python ``NumpyPickler``.
                         Loaded arrays are writable; ``numpy.memmap`` is stored as a plain array.
                         Version 1 files (joblib's own array layout, no tag) load with joblib
``cloudpickle`` .pkl     anything else picklable: functions, lambdas, classes from the notebook
==============  =======  ==========================================================================

Invariants: ``import cellpipe.storage.serializers`` never imports numpy, pandas, pyarrow or
joblib; the type checks look them up in ``sys.modules`` (a value of a type from a module that
was never imported cannot exist). ``deserialize(s.name, path)`` returns a value equal to the
one dumped. Bump a serializer's ``version`` whenever its format changes: versions are part of
every cache key.

Must not depend on: artifact or metadata stores, notebooks, the pipeline model, the runner.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import pickle
import socket
import sqlite3
import sys
import threading
import types
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cellpipe.errors import SerializationError, StorageError
from cellpipe.storage.os_errors import FULL_ERRNOS, storage_error_for
from cellpipe.storage.protocols import Serializer

__all__ = [
    "JSON_MAX_BYTES",
    "SERIALIZERS",
    "deserialize",
    "get_serializer",
    "serialize",
    "serializer_versions",
    "type_name",
    "unstorable_reason",
]

logger = logging.getLogger(__name__)

JSON_MAX_BYTES = 1024 * 1024
"""Values whose JSON is larger than this go to the next serializer."""

_JSON_SCALARS = (type(None), bool, int, float, str)


class _FallThrough(Exception):
    """Raised by a dump that cannot store this value faithfully; the next serializer tries."""


def type_name(value: Any) -> str:
    """Return ``module.qualname`` of the value's type, with public module names.

    ``_io.TextIOWrapper`` is reported as ``io.TextIOWrapper`` and builtins by bare name.
    """
    tp = type(value)
    module = tp.__module__
    if module == "builtins":
        return tp.__qualname__
    if module.startswith("_"):
        public = sys.modules.get(module.lstrip("_"))
        if public is not None and getattr(public, tp.__qualname__, None) is tp:
            module = public.__name__
    return f"{module}.{tp.__qualname__}"


# -- json ------------------------------------------------------------------------------------


def _is_json_tree(value: Any) -> bool:
    """True for exact JSON types with str keys and no shared or cyclic containers."""
    seen: set[int] = set()
    stack = [value]
    budget = JSON_MAX_BYTES  # every node costs at least one encoded byte
    while stack:
        budget -= 1
        if budget < 0:
            return False
        item = stack.pop()
        tp = type(item)
        if tp in _JSON_SCALARS:
            continue
        if tp is list or tp is dict:
            if id(item) in seen:  # aliasing would not survive a round trip
                return False
            seen.add(id(item))
            if tp is dict:
                if any(type(k) is not str for k in item):
                    return False
                stack.extend(item.values())
            else:
                stack.extend(item)
            continue
        return False
    return True


def _json_dump(value: Any, path: Path) -> None:
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=True, separators=(",", ":"))
    except (ValueError, RecursionError) as exc:  # e.g. an int with > 4300 digits
        raise _FallThrough(str(exc)) from exc
    if len(text) > JSON_MAX_BYTES:
        raise _FallThrough(f"JSON is {len(text)} bytes, over {JSON_MAX_BYTES}")
    path.write_text(text, encoding="ascii")


def _json_load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="ascii"))


# -- npy -------------------------------------------------------------------------------------


def _is_plain_array(value: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and type(value) in (np.ndarray, np.memmap) and not value.dtype.hasobject


def _npy_dump(value: Any, path: Path) -> None:
    import numpy as np

    with path.open("wb") as f:
        np.save(f, value, allow_pickle=False)


def _npy_load(path: Path) -> Any:
    import numpy as np

    try:
        # Copy-on-write: user code may mutate the array, the stored file never changes.
        return np.load(path, mmap_mode="c", allow_pickle=False)
    except ValueError:  # an empty array has no bytes to map
        return np.load(path, allow_pickle=False)


# -- parquet ---------------------------------------------------------------------------------


def _is_dataframe(value: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and type(value) is pd.DataFrame


def _parquet_check(df: Any) -> None:
    """Raise _FallThrough unless pyarrow stores ``df`` exactly (see the module table)."""
    import pandas as pd

    if isinstance(df.columns, pd.MultiIndex):
        raise _FallThrough("MultiIndex columns")
    names = list(df.columns)
    if any(type(n) is not str for n in names) or len(set(names)) != len(names):
        raise _FallThrough("column names must be unique strings")
    for label, dtype in _dtypes(df):
        if pd.api.types.is_object_dtype(dtype):
            raise _FallThrough(f"column {label!r} has object dtype")
        if isinstance(dtype, pd.CategoricalDtype) and not pd.api.types.is_string_dtype(
            dtype.categories.dtype
        ):
            raise _FallThrough(f"column {label!r} is a categorical of non-strings")


def _dtypes(df: Any) -> list[tuple[Any, Any]]:
    levels = [df.index.get_level_values(i) for i in range(df.index.nlevels)]
    return [*zip(df.columns, df.dtypes, strict=True), *((ix.name, ix.dtype) for ix in levels)]


def _parquet_dump(value: Any, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _parquet_check(value)
    try:
        table = pa.Table.from_pandas(value, preserve_index=None)
        restored = _to_pandas(table.slice(0, 0))
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise _FallThrough(str(exc)) from exc
    if [d for _, d in _dtypes(restored)] != [d for _, d in _dtypes(value)]:
        raise _FallThrough("pyarrow would change the dtypes")
    if value.attrs:
        try:
            attrs = json.dumps(value.attrs)
        except (TypeError, ValueError) as exc:
            raise _FallThrough("attrs are not JSON") from exc
        # The key pandas' own to_parquet uses, so read_parquet restores attrs.
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), b"PANDAS_ATTRS": attrs}
        )
    pq.write_table(table, path)


def _parquet_load(path: Path) -> Any:
    # pd.read_parquet goes through pq.read_table, which imports pyarrow.dataset to read one
    # file; ParquetFile reads it directly. The conversion is the one _parquet_dump checked.
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        table = f.read(use_pandas_metadata=True)
    df = _to_pandas(table)
    attrs = (table.schema.metadata or {}).get(b"PANDAS_ATTRS")
    if attrs is not None:
        df.attrs = json.loads(attrs)  # as pandas' own read_parquet restores them
    return df


def _to_pandas(table: Any) -> Any:
    with warnings.catch_warnings():
        # pandas' read_parquet silences this too: some pyarrow versions convert with
        # pandas' deprecated make_block.
        warnings.filterwarnings("ignore", "make_block is deprecated")
        return table.to_pandas()


# -- joblib ----------------------------------------------------------------------------------


def _is_joblib_value(value: Any) -> bool:
    if type(value).__module__.startswith("sklearn."):
        return True
    np = sys.modules.get("numpy")
    if np is None:
        return False
    if isinstance(value, np.ndarray):
        return True  # object arrays, masked arrays, matrices
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, pd.Series | pd.Index):
        return True
    if type(value) in (list, tuple):
        return any(isinstance(v, np.ndarray) for v in value)
    if type(value) is dict:
        return any(isinstance(v, np.ndarray) for v in value.values())
    return False


_PICKLE_PROTOCOL = 5
"""Fixed, not ``pickle.HIGHEST_PROTOCOL``: a new Python must not change the bytes silently."""

_JOBLIB_TAG = b"cellpipe.joblib.2"
_JOBLIB_HEADER = (
    pickle.PROTO
    + bytes([_PICKLE_PROTOCOL])
    + pickle.SHORT_BINUNICODE
    + bytes([len(_JOBLIB_TAG)])
    + _JOBLIB_TAG
    + pickle.POP
)
"""Starts every version 2 ``joblib`` file: pushes the tag and pops it again, so any unpickler
(pickle's, joblib's) reads past it to the pickle that follows, and the loader can tell the
format from the first bytes (version 1 files start with the pickler's own PROTO and FRAME)."""

_BY_REFERENCE = (type, types.FunctionType)


class _NoMainPickler(pickle.Pickler):
    """The C pickler, keeping what version 1 (joblib's pure-Python ``NumpyPickler``) promised.

    * A class or function of ``__main__`` (or an instance of such a class) raises
      `_FallThrough`: pickle stores them by reference, which no other process can load, and
      cloudpickle stores them by value.
    * Every array of type ``ndarray``, ``matrix`` or ``memmap`` loads back writable and as an
      in-memory array, as joblib's did: a memmap is stored as the array it maps, a read-only
      array as a copy (an in-band pickle buffer of read-only memory loads as read-only bytes).

    ``reducer_override`` sees every object except atoms (None, bools, ints, floats, str, bytes).
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file, protocol=_PICKLE_PROTOCOL)
        self._np: Any = sys.modules.get("numpy")
        self._arrays: tuple[type, ...] = ()
        if self._np is not None:
            self._arrays = (self._np.ndarray, self._np.matrix, self._np.memmap)

    def reducer_override(self, obj: Any) -> Any:
        tp = type(obj)
        module = obj.__module__ if isinstance(obj, _BY_REFERENCE) else tp.__module__
        if module == "__main__":
            name = getattr(obj, "__qualname__", None) or tp.__qualname__
            raise _FallThrough(f"refers to __main__.{name}")
        if tp in self._arrays:
            memmap = tp is self._np.memmap
            if memmap or not obj.flags.writeable:
                array = self._np.asarray(obj) if memmap else obj
                if not array.flags.writeable:
                    array = array.copy(order="K")
                return array.__reduce_ex__(_PICKLE_PROTOCOL)
        return NotImplemented


def _joblib_dump(value: Any, path: Path) -> None:
    with path.open("wb") as f:
        f.write(_JOBLIB_HEADER)
        _NoMainPickler(f).dump(value)


def _joblib_load(path: Path) -> Any:
    with path.open("rb") as f:
        if f.read(len(_JOBLIB_HEADER)) == _JOBLIB_HEADER:
            f.seek(0)
            return pickle.load(f)
    import joblib  # a version 1 file: joblib's own layout of arrays after the pickle

    return joblib.load(path)


# -- cloudpickle -----------------------------------------------------------------------------


def _cloudpickle_dump(value: Any, path: Path) -> None:
    import cloudpickle

    with path.open("wb") as f:
        cloudpickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def _cloudpickle_load(path: Path) -> Any:
    with path.open("rb") as f:
        return pickle.load(f)


def _anything(value: Any) -> bool:
    return True


SERIALIZERS: tuple[Serializer, ...] = (
    Serializer(name="json", version=1, suffix=".json", accepts=_is_json_tree,
               dump=_json_dump, load=_json_load),
    Serializer(name="npy", version=1, suffix=".npy", accepts=_is_plain_array,
               dump=_npy_dump, load=_npy_load),
    Serializer(name="parquet", version=1, suffix=".parquet", accepts=_is_dataframe,
               dump=_parquet_dump, load=_parquet_load),
    Serializer(name="joblib", version=2, suffix=".joblib", accepts=_is_joblib_value,
               dump=_joblib_dump, load=_joblib_load),
    Serializer(name="cloudpickle", version=1, suffix=".pkl", accepts=_anything,
               dump=_cloudpickle_dump, load=_cloudpickle_load),
)  # fmt: skip
"""Every serializer, in priority order. Register new ones here (and nowhere else)."""

_BY_NAME = {s.name: s for s in SERIALIZERS}


def serializer_versions() -> dict[str, int]:
    """Return ``{name: version}`` for every serializer (part of every cache key)."""
    return {s.name: s.version for s in SERIALIZERS}


def get_serializer(name: str) -> Serializer:
    """Return the serializer registered under ``name``.

    Raises:
        StorageError: if no serializer has that name (an artifact from a newer cellpipe).
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(_BY_NAME)
        raise StorageError(
            f"unknown serializer {name!r} (this cellpipe knows {known})",
            hint="the artifact was written by a newer cellpipe; upgrade cellpipe",
        ) from None


# -- values that cannot be stored ------------------------------------------------------------


def _is_lock(value: Any) -> bool:
    return isinstance(value, _LOCK_TYPES)


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))

_UNSTORABLE: tuple[tuple[Callable[[Any], bool], str, str], ...] = (
    (lambda v: isinstance(v, io.IOBase), "an open file",
     "return its contents or a path instead"),
    (lambda v: isinstance(v, types.GeneratorType | types.AsyncGeneratorType | types.CoroutineType),
     "a generator", "return a list (for example list(gen)) instead"),
    (lambda v: isinstance(v, socket.socket), "a network socket",
     "return the data you received, or the address, instead"),
    (lambda v: isinstance(v, sqlite3.Connection | sqlite3.Cursor), "a database connection",
     "return the query results (rows or a DataFrame) instead; reconnect in the step that needs it"),
    (_is_lock, "a lock", "create locks inside the step that uses them"),
)  # fmt: skip
"""Values that are live resources: a clear message beats pickle's "cannot pickle"."""


def unstorable_reason(value: Any) -> tuple[str, str] | None:
    """Return ``(what it is, hint)`` when ``value`` is a live resource that cannot be stored."""
    for predicate, what, hint in _UNSTORABLE:
        if predicate(value):
            return what, hint
    return None


def _subject(variable: str | None, step: str | None) -> str:
    if step is not None and variable is not None:
        return f"step '{step}' output '{variable}'"
    if variable is not None:
        return f"output '{variable}'"
    if step is not None:
        return f"an output of step '{step}'"
    return "the value"


# -- entry points ----------------------------------------------------------------------------


def serialize(
    value: Any,
    dest_dir: Path,
    *,
    variable: str | None = None,
    step: str | None = None,
) -> tuple[Serializer, Path]:
    """Write ``value`` to a new file in ``dest_dir`` with the first serializer that takes it.

    Args:
        value: the value to store.
        dest_dir: an existing folder; the file gets a unique name with the serializer's suffix.
            Use the artifact store's ``scratch_dir()`` so ``put_file(path, move=True)`` is a
            rename.
        variable: the variable name, for error messages.
        step: the step name, for error messages.

    Returns:
        The serializer used and the file written.

    Raises:
        SerializationError: if no serializer can store the value. The message names the step,
            the variable and the value's type, for example ``step 'load' output 'f' is an open
            file (io.TextIOWrapper) and cannot be stored`` with the hint ``return its contents
            or a path instead``.
    """
    subject = _subject(variable, step)
    tname = type_name(value)
    reason = unstorable_reason(value)
    if reason is not None:
        what, hint = reason
        raise SerializationError(f"{subject} is {what} ({tname}) and cannot be stored", hint=hint)
    last_error: Exception | None = None
    for serializer in SERIALIZERS:
        if not serializer.accepts(value):
            continue
        path = Path(dest_dir) / f"{uuid.uuid4().hex}{serializer.suffix}"
        try:
            serializer.dump(value, path)
        except Exception as exc:  # any failure means "try the next one"
            path.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in (*FULL_ERRNOS, errno.EROFS):
                # Disk full or read-only: no other serializer would do better.
                raise storage_error_for(exc, path) or exc from exc
            logger.debug("serializer %s declined %s: %s", serializer.name, tname, exc)
            last_error = exc
            continue
        except BaseException:  # Ctrl-C: leave no partial file behind
            path.unlink(missing_ok=True)
            raise
        return serializer, path
    detail = f": {last_error}" if last_error is not None else ""
    raise SerializationError(
        f"{subject} ({tname}) cannot be stored{detail}",
        hint="step outputs must be picklable; return plain data (values, arrays, frames, "
        "paths) rather than live resources such as files, connections or threads",
    ) from last_error


def deserialize(name: str, path: Path) -> Any:
    """Read a value back with the serializer that wrote it.

    Args:
        name: the serializer name recorded with the artifact.
        path: the artifact file.

    Returns:
        The value. A ``npy`` array is memory-mapped copy-on-write.

    Raises:
        StorageError: if ``name`` is not a known serializer.
    """
    return get_serializer(name).load(Path(path))
