"""The storage interfaces the runner, registry and CLI program against.

Owns: `ArtifactDigest`, the `ArtifactStore` protocol (bytes by content address) and the
`Serializer` contract (how a Python value becomes bytes and back).

Invariants: an artifact is immutable once written; its digest is ``sha256:<64 hex>`` of its
bytes; writing the same bytes twice is a no-op; a reader never sees a half-written artifact.

Must not depend on: notebooks, the pipeline model, the runner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NewType, Protocol

ArtifactDigest = NewType("ArtifactDigest", str)
"""``sha256:<64 lowercase hex>`` of an artifact's bytes."""


class ArtifactStore(Protocol):
    """Bytes by content address."""

    def put_file(self, path: Path, *, move: bool = False) -> ArtifactDigest:
        """Store the file's bytes (idempotent) and return their digest.

        With ``move=True`` the caller gives the file up: the store may rename it into place
        instead of copying it (the file is gone afterwards either way).
        """
        ...

    def put_bytes(self, data: bytes) -> ArtifactDigest:
        """Store ``data`` (idempotent) and return its digest."""
        ...

    def open(self, digest: ArtifactDigest) -> BinaryIO:
        """Open the artifact for reading; raises ArtifactNotFoundError."""
        ...

    def exists(self, digest: ArtifactDigest) -> bool:
        """Return whether the artifact is in the store."""
        ...

    def local_path(self, digest: ArtifactDigest) -> Path:
        """Return a local file with the artifact's bytes, checked against the digest.

        Raises:
            ArtifactNotFoundError: if the store does not have it.
            ArtifactCorruptedError: if the bytes no longer match the digest.
        """
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Serializer:
    """One way of turning values into a file and back.

    Attributes:
        name: the recorded name (``json``, ``npy``, ``parquet``, ``joblib``, ``cloudpickle``).
        version: bumped whenever the format changes; part of every cache key.
        suffix: the file suffix (``.npy``).
        accepts: True for values this serializer handles.
        dump: writes the value to the given path.
        load: reads the value back from the given path.
    """

    name: str
    version: int
    suffix: str
    accepts: Callable[[Any], bool]
    dump: Callable[[Any, Path], None]
    load: Callable[[Path], Any]
