"""The runtime safety net for in-place changes the static analysis did not see.

Owns: `Fingerprints` (cheap fingerprints of a step's *guarded* inputs, taken right after they
are loaded and again after the step's code ran) and `guard_enabled` (the documented switch,
``CELLPIPE_GUARD=0``). The orchestrator decides which inputs are guarded (`guarded_inputs`):
an input that a later step in notebook order also reads from the same producer, or a pipeline
metric, and that the step does not output itself.

Invariants:
    * a fingerprint depends only on the value's content: numpy arrays by their bytes (plus
      dtype and shape), pandas DataFrames and Series per column's values, index and column
      labels, lists, tuples and dicts element by element, anything else by its pickle
      (protocol 5); a value that cannot be fingerprinted is skipped (no guarantee, no error);
    * an array memory-mapped copy-on-write from the artifact store (how ``npy`` artifacts are
      loaded) is not hashed at all while the process has not written to any of its pages (the
      mapping's ``Anonymous`` size in Linux ``/proc/self/smaps``); when it has, its bytes are
      compared with the stored file; hashing is SHA-1 (hardware-accelerated: about three times
      faster than BLAKE2b here; this is change detection, not security);
    * a rebinding the analysis missed (``globals()[name] = ...``) counts as a change when the
      new value's fingerprint differs.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI; numpy and pandas are
looked up in ``sys.modules`` (a value of their types cannot exist without them).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cellpipe.pipeline.model import RANDOM_STATE

if TYPE_CHECKING:
    from cellpipe.pipeline.model import Pipeline

__all__ = ["GUARD_ENV", "Fingerprints", "guard_enabled", "guarded_inputs"]

GUARD_ENV = "CELLPIPE_GUARD"
"""Set to ``0`` (or ``off``/``false``/``no``) to switch the in-place change guard off."""

_MAX_DEPTH = 20
_MAX_ITEMS = 10_000  # a container with more elements is fingerprinted by its pickle
_SMALL_FRAME = 1_000_000  # cells; larger frames are hashed column by column (buffers)


def guard_enabled() -> bool:
    """Return whether the in-place change guard is on (the default)."""
    return os.environ.get(GUARD_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


class _Unfingerprintable(Exception):
    """The value cannot be fingerprinted: it is skipped."""


def _hash_buffer(h: Any, array: Any) -> None:
    np = sys.modules["numpy"]
    if array.dtype.hasobject:
        raise _Unfingerprintable("object array")
    h.update(f"{array.dtype.str}{array.shape}".encode())
    contiguous = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    h.update(memoryview(contiguous.reshape(-1).view(np.uint8)))


def _update(h: Any, value: Any, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _Unfingerprintable("too deep")
    np = sys.modules.get("numpy")
    pd = sys.modules.get("pandas")
    kind = type(value)
    if np is not None and isinstance(value, np.ndarray) and not value.dtype.hasobject:
        h.update(b"ndarray")
        _hash_buffer(h, value)
        return
    if pd is not None and kind is pd.DataFrame:
        h.update(b"DataFrame")
        _update_pandas_labels(h, value.index)
        _update_pandas_labels(h, value.columns)
        h.update(repr(list(value.dtypes)).encode())
        if value.size <= _SMALL_FRAME:
            # one vectorised pass (row hashes over every column): cheaper than column access
            h.update(memoryview(pd.util.hash_pandas_object(value, index=False).to_numpy()))
            return
        for position in range(value.shape[1]):
            _update_column(h, value.iloc[:, position])
        return
    if pd is not None and kind is pd.Series:
        h.update(b"Series" + repr(value.name).encode())
        _update_pandas_labels(h, value.index)
        _update_column(h, value)
        return
    if kind in (list, tuple) and len(value) <= _MAX_ITEMS:
        h.update(f"{kind.__name__}{len(value)}".encode())
        for item in value:
            _update(h, item, depth + 1)
        return
    if kind is dict and len(value) <= _MAX_ITEMS:
        h.update(f"dict{len(value)}".encode())
        for key, item in value.items():
            _update(h, key, depth + 1)
            _update(h, item, depth + 1)
        return
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception as exc:
        raise _Unfingerprintable(str(exc)) from exc
    h.update(b"pickle")
    h.update(data)


def _update_pandas_labels(h: Any, index: Any) -> None:
    pd = sys.modules["pandas"]
    h.update(f"{type(index).__name__}{index.names!r}{index.dtype}".encode())
    if type(index) is pd.RangeIndex:
        h.update(f"{index.start}:{index.stop}:{index.step}".encode())
        return
    h.update(memoryview(pd.util.hash_pandas_object(index, index=False).to_numpy()))


def _update_column(h: Any, column: Any) -> None:
    np = sys.modules["numpy"]
    pd = sys.modules["pandas"]
    h.update(str(column.dtype).encode())
    values = column.to_numpy() if isinstance(column.dtype, np.dtype) else None
    if values is not None and not values.dtype.hasobject:
        _hash_buffer(h, values)
    else:
        h.update(memoryview(pd.util.hash_pandas_object(column, index=False).to_numpy()))


def fingerprint(value: Any) -> bytes | None:
    """Return a digest of ``value``'s content, or None when it cannot be fingerprinted."""
    h = hashlib.sha1(usedforsecurity=False)
    try:
        _update(h, value, 0)
    except _Unfingerprintable:
        return None
    except Exception:
        return None
    return h.digest()


# -- copy-on-write memory maps -----------------------------------------------------------------


def _mapped_file(value: Any) -> str | None:
    """The file of a copy-on-write ``numpy.memmap`` that owns its mapping, else None."""
    np = sys.modules.get("numpy")
    if np is None or type(value) is not np.memmap or getattr(value, "mode", None) != "c":
        return None
    filename = getattr(value, "filename", None)
    if not filename or not value.flags.c_contiguous:
        return None
    return os.path.realpath(str(filename))


def _copied_kib(paths: Iterable[str]) -> dict[str, int] | None:
    """KiB of pages copied on write in this process's mappings of ``paths`` (None: no smaps).

    ``Anonymous`` counts the pages of a private file mapping that the process wrote to (they
    became private copies); ``Private_Dirty`` would also count pages only read, when the file
    was written recently and its page cache is not yet flushed.
    """
    wanted = set(paths)
    found = dict.fromkeys(wanted, 0)
    current: str | None = None
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:  # noqa: PTH123
            for line in smaps:
                first = line.split(None, 1)[0] if line.strip() else ""
                if "-" in first and not first.endswith(":"):
                    parts = line.split(None, 5)
                    current = parts[5].strip() if len(parts) == 6 else None
                    if current not in wanted:
                        current = None
                elif current is not None and line.startswith("Anonymous:"):
                    found[current] += int(line.split()[1])
    except OSError:
        return None
    return found


def _same_as_stored(value: Any, path: str) -> bool:
    """`_same_as_file`, or True when the file cannot be read back (no guarantee, no error)."""
    try:
        return _same_as_file(value, path)
    except (OSError, ValueError):
        return True


def _same_as_file(value: Any, path: str) -> bool:
    """Compare a written copy-on-write array with the stored file, 64 MiB at a time."""
    np = sys.modules["numpy"]
    stored = np.load(path, mmap_mode="r", allow_pickle=False)
    if stored.shape != value.shape or stored.dtype != value.dtype:
        return False
    a = value.reshape(-1).view(np.uint8)
    b = stored.reshape(-1).view(np.uint8)
    step = 64 << 20
    return all(
        np.array_equal(a[start : start + step], b[start : start + step])
        for start in range(0, a.size, step)
    )


# -- the guard -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Taken:
    obj: Any
    digest: bytes | None = None
    mapped: str | None = None


class Fingerprints:
    """Fingerprints of a step's guarded inputs, taken before its code runs.

    Args:
        namespace: the step's namespace, with its inputs loaded.
        names: the guarded input names.
    """

    def __init__(self, namespace: Mapping[str, Any], names: Iterable[str]) -> None:
        self._taken: dict[str, _Taken] = {}
        self._copied: dict[str, int] = {}
        mapped: list[str] = []
        for name in names:
            if name not in namespace:
                continue
            value = namespace[name]
            path = _mapped_file(value)
            if path is not None:
                self._taken[name] = _Taken(obj=value, mapped=path)
                mapped.append(path)
                continue
            digest = fingerprint(value)
            if digest is not None:
                self._taken[name] = _Taken(obj=value, digest=digest)
        if mapped:
            copied = _copied_kib(mapped)
            if copied is None:  # no smaps: hash the mapped arrays like any other
                for taken in self._taken.values():
                    if taken.mapped is not None:
                        taken.mapped = None
                        taken.digest = fingerprint(taken.obj)
            else:
                self._copied = copied

    def changed(self, namespace: Mapping[str, Any]) -> list[str]:
        """Return the guarded names whose value differs now, in the order they were given."""
        changed: list[str] = []
        mapped = [t.mapped for t in self._taken.values() if t.mapped is not None]
        copied_now = _copied_kib(mapped) if mapped else {}
        for name, taken in self._taken.items():
            if name not in namespace:
                continue  # deleted: later steps still get the value (as `del` in Jupyter would not)
            value = namespace[name]
            if taken.mapped is not None:
                path = taken.mapped
                if value is taken.obj:
                    now = (copied_now or {}).get(path, 0)
                    if now > self._copied.get(path, 0) and not _same_as_stored(value, path):
                        changed.append(name)
                    continue
                np = sys.modules["numpy"]  # rebound: compare with the stored original
                before = fingerprint(np.load(path, mmap_mode="r", allow_pickle=False))
                if before is not None and fingerprint(value) != before:
                    changed.append(name)
                continue
            if fingerprint(value) != taken.digest:
                changed.append(name)
        return changed


# -- which inputs are guarded (the orchestrator's side) -----------------------------------------


def guarded_inputs(pipeline: Pipeline) -> dict[str, tuple[str, ...]]:
    """Return, per step, the inputs whose in-place change must stop the run.

    An input ``X`` that step ``S`` gets from producer ``P`` is guarded when a step after ``S``
    in notebook order also reads ``X`` from ``P`` (in Jupyter it would see the change, in
    cellpipe it gets the stored value), or when ``X`` is a pipeline metric produced by ``P``.
    It is not guarded when ``S`` outputs ``X`` itself (the analysis saw the change), nor is
    `RANDOM_STATE`.
    """
    metrics = {(m.name, m.producer) for m in pipeline.metrics}
    readers: dict[tuple[str, str], list[int]] = {}
    for step in pipeline.steps:
        first = step.cells[0] if step.cells else 0
        for ref in step.inputs:
            readers.setdefault((ref.name, ref.producer), []).append(first)
    guarded: dict[str, tuple[str, ...]] = {}
    for step in pipeline.steps:
        first = step.cells[0] if step.cells else 0
        names = [
            ref.name
            for ref in step.inputs
            if ref.name != RANDOM_STATE
            and ref.name not in step.outputs
            and (
                (ref.name, ref.producer) in metrics
                or any(cell > first for cell in readers[(ref.name, ref.producer)])
            )
        ]
        if names:
            guarded[step.name] = tuple(names)
    return guarded
