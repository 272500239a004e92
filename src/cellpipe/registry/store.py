"""The registry's persistence: models, versions and aliases beside the run records.

Owns: the `ModelStore` protocol, `SqlModelStore` (the schema v4 tables, over the metadata
store's own database and connection adapter), `MemoryModelStore` (the fake for the memory
metadata store), `model_store_for` (which of them lives beside a metadata store) and
`ModelSummary` (one line of ``cellpipe models list``).

Invariants:
    * a version is inserted once and never updated; version numbers are 1, 2, ... per name,
      allocated inside the inserting transaction: SQLite's ``BEGIN IMMEDIATE`` serialises
      writers, PostgreSQL locks the model's row (``SELECT ... FOR UPDATE``) first; the primary
      key ``(name, version)`` refuses a duplicate, and an insert that loses a race anyway
      (two processes creating the same new model at once) is retried;
    * aliases are the only mutable part: every move (set, moved, removed) is appended to the
      history in the same transaction as the change;
    * both stores raise the same `ModelNotFoundError` messages (the contract tests pin them),
      which name what is missing, on which model, and what exists instead.

Must not depend on: the runner, notebooks, the KFP compiler, the CLI.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

from cellpipe.errors import ModelNotFoundError, RegistryError
from cellpipe.registry.model import AliasMove, ModelVersion, Signature
from cellpipe.storage._sql import SqlConnection
from cellpipe.storage.metadata import MemoryMetadataStore, SqlMetadataStore, json_default
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import ArtifactRef, MetadataStore

__all__ = [
    "MemoryModelStore",
    "ModelStore",
    "ModelSummary",
    "SqlModelStore",
    "model_store_for",
]

_RETRIES = 5
"""Attempts at inserting a version when a concurrent writer took the number first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSummary:
    """One registered model: its newest version, how many there are, its aliases.

    Attributes:
        name: the model's name.
        created_at: when its first version was registered (UTC).
        description: the model's description (from its first registration).
        latest: the newest version number.
        version_count: how many versions it has.
        aliases: alias -> version.
    """

    name: str
    created_at: datetime
    description: str
    latest: int
    version_count: int
    aliases: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "description": self.description,
            "latest": self.latest,
            "versions": self.version_count,
            "aliases": dict(self.aliases),
        }


class ModelStore(Protocol):
    """Where model versions and aliases are kept."""

    def add_version(self, draft: ModelVersion, *, model_description: str = "") -> ModelVersion:
        """Insert ``draft`` under the next version number of its name and return it.

        ``draft.version`` and ``draft.aliases`` are ignored. The model is created with
        ``model_description`` when this is its first version.
        """
        ...

    def get_version(self, name: str, version: int) -> ModelVersion:
        """Return one version (raises `ModelNotFoundError`)."""
        ...

    def latest_version(self, name: str) -> ModelVersion:
        """Return the newest version of ``name`` (raises `ModelNotFoundError`)."""
        ...

    def alias_version(self, name: str, alias: str) -> ModelVersion:
        """Return the version ``alias`` points at (raises `ModelNotFoundError`)."""
        ...

    def versions(self, name: str) -> list[ModelVersion]:
        """Return every version of ``name``, oldest first (empty when unknown)."""
        ...

    def list_models(self) -> list[ModelSummary]:
        """Return every model, by name."""
        ...

    def move_alias(self, name: str, alias: str, version: int | None, *, at: datetime) -> AliasMove:
        """Point ``alias`` at ``version`` (None removes it) and record the move."""
        ...

    def alias_history(self, name: str) -> list[AliasMove]:
        """Return every move of the model's aliases, oldest first (raises if unknown)."""
        ...


# -- messages (shared by both stores) ----------------------------------------------------------


def _listing(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def _versions_text(numbers: Sequence[int]) -> str:
    """``1, 2, 3`` or, for a long contiguous run, ``1-40``."""
    if not numbers:
        return "none"
    if len(numbers) > 5 and list(numbers) == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(str(n) for n in numbers)


def unknown_model(name: str, known: Sequence[str]) -> ModelNotFoundError:
    """The error for a model name nobody registered (with a "did you mean")."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    if close:
        hint = f"did you mean '{close[0]}'? `cellpipe models list` lists the models"
    elif known:
        hint = "models: " + _listing(sorted(known))
    else:
        hint = "register one first: cellpipe.register_model(obj, NAME) in a step, or "
        hint += "`cellpipe models register NAME --run RUN --step STEP --var VARIABLE`"
    return ModelNotFoundError(f"no model '{name}' in the registry", hint=hint)


def unknown_version(name: str, version: int, numbers: Sequence[int]) -> ModelNotFoundError:
    """The error for a version number the model does not have."""
    return ModelNotFoundError(
        f"model '{name}' has no version {version}; versions: {_versions_text(numbers)}",
        hint=f"use one of them, or '{name}@latest' for the newest",
    )


def unknown_alias(name: str, alias: str, aliases: Sequence[str]) -> ModelNotFoundError:
    """The error for an alias the model does not have."""
    return ModelNotFoundError(
        f"no alias '{alias}' on model '{name}'; aliases: {_listing(sorted(aliases))}",
        hint=f"set it with `cellpipe models alias {name} {alias} VERSION`",
    )


# -- conversions -------------------------------------------------------------------------------


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: records use timezone-aware UTC times")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps(value: Any, *, what: str) -> str:
    try:
        return json.dumps(value, default=json_default, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise RegistryError(
            f"the {what} of a model version must be JSON values: {exc}",
            hint="use numbers, strings, booleans, None, or lists and dicts of those",
        ) from exc


def _checked(draft: ModelVersion) -> ModelVersion:
    """Return ``draft`` with plain, read-only JSON parameters and metrics (checked)."""
    params = json.loads(_dumps(dict(draft.parameters), what="parameters"))
    metrics = json.loads(_dumps(dict(draft.metrics), what="metrics"))
    _ts(draft.created_at)
    return replace(
        draft,
        parameters=MappingProxyType(params),
        metrics=MappingProxyType(metrics),
        aliases=(),
    )


# -- SQL -----------------------------------------------------------------------------------------

_VERSION_COLUMNS = (
    "name, version, digest, serializer, serializer_version, size, type_name, created_at,"
    " run_id, step, variable, parameters_json, metrics_json, signature_json, description"
)


class SqlModelStore:
    """`ModelStore` on the metadata store's database (schema v4 tables).

    Args:
        metadata: the open metadata store; its transactions are reused, so registry writes
            queue like every other writer (``BEGIN IMMEDIATE`` on SQLite).
    """

    def __init__(self, metadata: SqlMetadataStore) -> None:
        self._metadata = metadata
        # Same dialect flag the metadata store uses for its row locks.
        self._postgresql = metadata._db.dialect_name == "postgresql"

    @contextmanager
    def _write(self) -> Iterator[SqlConnection]:
        with self._metadata._write() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[SqlConnection]:
        with self._metadata._read() as conn:
            yield conn

    def _lock_model(self, conn: SqlConnection, name: str) -> bool:
        """Lock the model's row until the transaction ends; return whether it exists."""
        lock = " FOR UPDATE" if self._postgresql else ""
        row = conn.execute(f"SELECT 1 FROM models WHERE name = :name{lock}", {"name": name})
        return row.first() is not None

    # -- writes -------------------------------------------------------------------------------

    def add_version(self, draft: ModelVersion, *, model_description: str = "") -> ModelVersion:
        """Insert ``draft`` under the next version number of its name and return it."""
        draft = _checked(draft)
        last: BaseException | None = None
        for _ in range(_RETRIES):
            try:
                return self._insert_version(draft, model_description)
            except self._metadata._db.integrity_errors as exc:
                last = exc  # a concurrent writer created the model or took the number
        raise RegistryError(
            f"could not register a version of model '{draft.name}': {last}",
            hint="other processes are registering the same model right now; try again",
        ) from last

    def _insert_version(self, draft: ModelVersion, model_description: str) -> ModelVersion:
        a = draft.artifact
        with self._write() as conn:
            if not self._lock_model(conn, draft.name):
                conn.execute(
                    "INSERT INTO models (name, created_at, description)"
                    " VALUES (:name, :at, :description)",
                    {
                        "name": draft.name,
                        "at": _ts(draft.created_at),
                        "description": model_description,
                    },
                )
            number = int(
                conn.execute(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = :name",
                    {"name": draft.name},
                ).scalar()
            )
            conn.execute(
                "INSERT INTO artifacts (digest, serializer, serializer_version, size, type_name,"
                " created_at) VALUES (:digest, :serializer, :serializer_version, :size,"
                " :type_name, :at) ON CONFLICT (digest) DO NOTHING",
                {
                    "digest": a.digest,
                    "serializer": a.serializer,
                    "serializer_version": a.serializer_version,
                    "size": a.size,
                    "type_name": a.type_name,
                    "at": _ts(draft.created_at),
                },
            )
            conn.execute(
                f"INSERT INTO model_versions ({_VERSION_COLUMNS}) VALUES (:name, :version,"
                " :digest, :serializer, :serializer_version, :size, :type_name, :at, :run_id,"
                " :step, :variable, :params, :metrics, :signature, :description)",
                {
                    "name": draft.name,
                    "version": number,
                    "digest": a.digest,
                    "serializer": a.serializer,
                    "serializer_version": a.serializer_version,
                    "size": a.size,
                    "type_name": a.type_name,
                    "at": _ts(draft.created_at),
                    "run_id": draft.run_id,
                    "step": draft.step,
                    "variable": draft.variable,
                    "params": _dumps(dict(draft.parameters), what="parameters"),
                    "metrics": _dumps(dict(draft.metrics), what="metrics"),
                    "signature": (
                        json.dumps(draft.signature.to_json()) if draft.signature else None
                    ),
                    "description": draft.description,
                },
            )
        return replace(draft, version=number)

    def move_alias(self, name: str, alias: str, version: int | None, *, at: datetime) -> AliasMove:
        """Point ``alias`` at ``version`` (None removes it) and record the move.

        Raises:
            ModelNotFoundError: for an unknown model or version, or removing an unknown alias.
        """
        key = {"name": name, "alias": alias}
        with self._write() as conn:
            if not self._lock_model(conn, name):
                raise unknown_model(name, self._names(conn))
            if version is not None and not self._has_version(conn, name, version):
                raise unknown_version(name, version, self._numbers(conn, name))
            previous = conn.execute(
                "SELECT version FROM model_aliases WHERE name = :name AND alias = :alias", key
            ).scalar()
            if version is None and previous is None:
                raise unknown_alias(name, alias, list(self._aliases(conn, name)))
            conn.execute("DELETE FROM model_aliases WHERE name = :name AND alias = :alias", key)
            if version is not None:
                conn.execute(
                    "INSERT INTO model_aliases (name, alias, version, moved_at)"
                    " VALUES (:name, :alias, :version, :at)",
                    {**key, "version": version, "at": _ts(at)},
                )
            seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM model_alias_moves WHERE name = :name", key
            ).scalar()
            conn.execute(
                "INSERT INTO model_alias_moves (name, seq, alias, version, previous, moved_at)"
                " VALUES (:name, :seq, :alias, :version, :previous, :at)",
                {**key, "seq": seq, "version": version, "previous": previous, "at": _ts(at)},
            )
        return AliasMove(name=name, alias=alias, version=version, previous=previous, moved_at=at)

    # -- reads --------------------------------------------------------------------------------

    @staticmethod
    def _names(conn: SqlConnection) -> list[str]:
        return [r[0] for r in conn.execute("SELECT name FROM models ORDER BY name")]

    @staticmethod
    def _has_version(conn: SqlConnection, name: str, version: int) -> bool:
        row = conn.execute(
            "SELECT 1 FROM model_versions WHERE name = :name AND version = :version",
            {"name": name, "version": version},
        ).first()
        return row is not None

    @staticmethod
    def _numbers(conn: SqlConnection, name: str) -> list[int]:
        rows = conn.execute(
            "SELECT version FROM model_versions WHERE name = :name ORDER BY version",
            {"name": name},
        )
        return [int(r[0]) for r in rows]

    @staticmethod
    def _aliases(conn: SqlConnection, name: str) -> dict[str, int]:
        rows = conn.execute(
            "SELECT alias, version FROM model_aliases WHERE name = :name ORDER BY alias",
            {"name": name},
        )
        return {r[0]: int(r[1]) for r in rows}

    def _exists(self, conn: SqlConnection, name: str) -> bool:
        row = conn.execute("SELECT 1 FROM models WHERE name = :name", {"name": name}).first()
        return row is not None

    def _select(self, conn: SqlConnection, name: str, where: str, **params: Any) -> list[Any]:
        return list(
            conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE name = :name{where}"
                " ORDER BY version",
                {"name": name, **params},
            ).all()
        )

    def _version_from_row(self, row: Any, aliases: Mapping[str, int]) -> ModelVersion:
        return ModelVersion(
            name=row[0],
            version=int(row[1]),
            artifact=ArtifactRef(
                digest=ArtifactDigest(row[2]),
                serializer=row[3],
                serializer_version=int(row[4]),
                size=int(row[5]),
                type_name=row[6],
            ),
            created_at=datetime.fromisoformat(row[7]),
            run_id=row[8],
            step=row[9],
            variable=row[10],
            parameters=MappingProxyType(json.loads(row[11])),
            metrics=MappingProxyType(json.loads(row[12])),
            signature=Signature.from_json(json.loads(row[13])) if row[13] else None,
            description=row[14],
            aliases=tuple(a for a, v in aliases.items() if v == int(row[1])),
        )

    def _one(self, conn: SqlConnection, name: str, where: str, **params: Any) -> ModelVersion:
        rows = self._select(conn, name, where, **params)
        return self._version_from_row(rows[-1], self._aliases(conn, name))

    def get_version(self, name: str, version: int) -> ModelVersion:
        """Return one version (raises `ModelNotFoundError`)."""
        with self._read() as conn:
            if not self._exists(conn, name):
                raise unknown_model(name, self._names(conn))
            if not self._has_version(conn, name, version):
                raise unknown_version(name, version, self._numbers(conn, name))
            return self._one(conn, name, " AND version = :v", v=version)

    def latest_version(self, name: str) -> ModelVersion:
        """Return the newest version of ``name`` (raises `ModelNotFoundError`)."""
        with self._read() as conn:
            if not self._exists(conn, name):
                raise unknown_model(name, self._names(conn))
            return self._one(
                conn,
                name,
                " AND version = (SELECT MAX(version) FROM model_versions WHERE name = :name)",
            )

    def alias_version(self, name: str, alias: str) -> ModelVersion:
        """Return the version ``alias`` points at (raises `ModelNotFoundError`)."""
        with self._read() as conn:
            if not self._exists(conn, name):
                raise unknown_model(name, self._names(conn))
            aliases = self._aliases(conn, name)
            if alias not in aliases:
                raise unknown_alias(name, alias, list(aliases))
            return self._one(conn, name, " AND version = :v", v=aliases[alias])

    def versions(self, name: str) -> list[ModelVersion]:
        """Return every version of ``name``, oldest first (empty when unknown)."""
        with self._read() as conn:
            aliases = self._aliases(conn, name)
            return [self._version_from_row(r, aliases) for r in self._select(conn, name, "")]

    def list_models(self) -> list[ModelSummary]:
        """Return every model, by name."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT m.name, m.created_at, m.description, MAX(v.version), COUNT(v.version)"
                " FROM models m JOIN model_versions v ON v.name = m.name"
                " GROUP BY m.name, m.created_at, m.description ORDER BY m.name"
            ).all()
            aliases: dict[str, dict[str, int]] = {}
            for name, alias, version in conn.execute(
                "SELECT name, alias, version FROM model_aliases ORDER BY name, alias"
            ):
                aliases.setdefault(name, {})[alias] = int(version)
        return [
            ModelSummary(
                name=r[0],
                created_at=datetime.fromisoformat(r[1]),
                description=r[2],
                latest=int(r[3]),
                version_count=int(r[4]),
                aliases=MappingProxyType(aliases.get(r[0], {})),
            )
            for r in rows
        ]

    def alias_history(self, name: str) -> list[AliasMove]:
        """Return every move of the model's aliases, oldest first (raises if unknown)."""
        with self._read() as conn:
            if not self._exists(conn, name):
                raise unknown_model(name, self._names(conn))
            rows = conn.execute(
                "SELECT alias, version, previous, moved_at FROM model_alias_moves"
                " WHERE name = :name ORDER BY seq",
                {"name": name},
            ).all()
        return [
            AliasMove(
                name=name,
                alias=r[0],
                version=None if r[1] is None else int(r[1]),
                previous=None if r[2] is None else int(r[2]),
                moved_at=datetime.fromisoformat(r[3]),
            )
            for r in rows
        ]


# -- memory ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _MemoryModel:
    created_at: datetime
    description: str
    versions: list[ModelVersion] = field(default_factory=list)
    aliases: dict[str, int] = field(default_factory=dict)
    moves: list[AliasMove] = field(default_factory=list)


class MemoryModelStore:
    """`ModelStore` in dicts: the fake for tests, beside a `MemoryMetadataStore`.

    Thread-safe; not shared between processes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, _MemoryModel] = {}

    def _model(self, name: str) -> _MemoryModel:
        model = self._models.get(name)
        if model is None:
            raise unknown_model(name, sorted(self._models))
        return model

    @staticmethod
    def _with_aliases(version: ModelVersion, model: _MemoryModel) -> ModelVersion:
        aliases = tuple(sorted(a for a, v in model.aliases.items() if v == version.version))
        return replace(version, aliases=aliases)

    def add_version(self, draft: ModelVersion, *, model_description: str = "") -> ModelVersion:
        """Insert ``draft`` under the next version number of its name and return it."""
        draft = _checked(draft)
        with self._lock:
            model = self._models.setdefault(
                draft.name,
                _MemoryModel(created_at=draft.created_at, description=model_description),
            )
            stored = replace(draft, version=len(model.versions) + 1)
            model.versions.append(stored)
        return stored

    def move_alias(self, name: str, alias: str, version: int | None, *, at: datetime) -> AliasMove:
        """Point ``alias`` at ``version`` (None removes it) and record the move."""
        _ts(at)
        with self._lock:
            model = self._model(name)
            numbers = [v.version for v in model.versions]
            if version is not None and version not in numbers:
                raise unknown_version(name, version, numbers)
            previous = model.aliases.get(alias)
            if version is None and previous is None:
                raise unknown_alias(name, alias, list(model.aliases))
            if version is None:
                del model.aliases[alias]
            else:
                model.aliases[alias] = version
            move = AliasMove(
                name=name, alias=alias, version=version, previous=previous, moved_at=at
            )
            model.moves.append(move)
        return move

    def get_version(self, name: str, version: int) -> ModelVersion:
        """Return one version (raises `ModelNotFoundError`)."""
        with self._lock:
            model = self._model(name)
            for found in model.versions:
                if found.version == version:
                    return self._with_aliases(found, model)
            raise unknown_version(name, version, [v.version for v in model.versions])

    def latest_version(self, name: str) -> ModelVersion:
        """Return the newest version of ``name`` (raises `ModelNotFoundError`)."""
        with self._lock:
            model = self._model(name)
            return self._with_aliases(model.versions[-1], model)

    def alias_version(self, name: str, alias: str) -> ModelVersion:
        """Return the version ``alias`` points at (raises `ModelNotFoundError`)."""
        with self._lock:
            model = self._model(name)
            if alias not in model.aliases:
                raise unknown_alias(name, alias, list(model.aliases))
            return self._with_aliases(model.versions[model.aliases[alias] - 1], model)

    def versions(self, name: str) -> list[ModelVersion]:
        """Return every version of ``name``, oldest first (empty when unknown)."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                return []
            return [self._with_aliases(v, model) for v in model.versions]

    def list_models(self) -> list[ModelSummary]:
        """Return every model, by name."""
        with self._lock:
            return [
                ModelSummary(
                    name=name,
                    created_at=m.created_at,
                    description=m.description,
                    latest=m.versions[-1].version,
                    version_count=len(m.versions),
                    aliases=MappingProxyType(dict(sorted(m.aliases.items()))),
                )
                for name, m in sorted(self._models.items())
            ]

    def alias_history(self, name: str) -> list[AliasMove]:
        """Return every move of the model's aliases, oldest first (raises if unknown)."""
        with self._lock:
            return list(self._model(name).moves)


def model_store_for(metadata: MetadataStore) -> SqlModelStore | MemoryModelStore:
    """Return the model store that lives beside ``metadata``.

    Raises:
        RegistryError: for a metadata store the registry cannot live beside.
    """
    if isinstance(metadata, SqlMetadataStore):
        return SqlModelStore(metadata)
    if isinstance(metadata, MemoryMetadataStore):
        existing = getattr(metadata, "_cellpipe_models", None)
        if isinstance(existing, MemoryModelStore):
            return existing
        store = MemoryModelStore()
        # One registry per memory store, so what was registered can be read back later.
        object.__setattr__(metadata, "_cellpipe_models", store)
        return store
    raise RegistryError(
        f"the model registry cannot use a {type(metadata).__name__} metadata store",
        hint="use a SQL metadata store (SQLite or PostgreSQL) or the memory store",
    )
