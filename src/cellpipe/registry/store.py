"""The registry's persistence: models, versions and aliases beside the run records.

Owns: the `ModelStore` protocol, `SqlModelStore` (the schema v4 and v6 tables, over the
metadata store's own database and connection adapter), `MemoryModelStore` (the fake for the
memory metadata store), `model_store_for` (which of them lives beside a metadata store) and
`ModelSummary` (one line of ``cellpipe models list``).

Invariants:
    * a version's object, lineage, signature, packages and input example are inserted once
      and never updated; version numbers are 1, 2, ... per name, allocated inside the
      inserting transaction: SQLite's ``BEGIN IMMEDIATE`` serialises writers, PostgreSQL locks
      the model's row (``SELECT ... FOR UPDATE``) first; the primary key ``(name, version)``
      refuses a duplicate, and an insert that loses a race anyway (two processes creating the
      same new model at once) is retried;
    * every change (an alias move, archiving, deleting, tags, a description) runs in one such
      write transaction holding the model's row, and checks what it depends on inside it: an
      alias never points at an archived or deleted version, because archiving and deleting
      refuse an aliased version and moving an alias refuses an archived one;
    * a deleted version keeps its row (``deleted_at`` set) so its number is never given again;
      every read but the number allocation skips it;
    * every alias move (set, moved, removed) is appended to the history in the same
      transaction as the change;
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
from cellpipe.registry.model import AliasMove, ModelVersion, Signature, check_tag
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
        description: the model's description (from its first registration, or edited).
        latest: the version ``NAME`` resolves to: the newest one not archived (None when
            every version is archived or deleted).
        version_count: how many versions are in use (neither archived nor deleted).
        aliases: alias -> version.
        archived_count: how many versions are archived (not counted in ``version_count``).
    """

    name: str
    created_at: datetime
    description: str
    latest: int | None
    version_count: int
    aliases: Mapping[str, int] = field(default_factory=dict)
    archived_count: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "description": self.description,
            "latest": self.latest,
            "versions": self.version_count,
            "archived": self.archived_count,
            "aliases": dict(self.aliases),
        }


class ModelStore(Protocol):
    """Where model versions and aliases are kept."""

    def add_version(
        self, draft: ModelVersion, *, model_description: str = "", keep_number: bool = False
    ) -> ModelVersion:
        """Insert ``draft`` under the next version number of its name and return it.

        ``draft.aliases`` and ``draft.archived`` are ignored, and ``draft.version`` too unless
        ``keep_number`` (a copy from another registry): then the version keeps its number,
        and a name that already has that number or a higher one (deleted ones included) is a
        `RegistryError`. The model is created with ``model_description`` when this is its
        first version.
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

    def set_archived(
        self, name: str, version: int, archived: bool, *, at: datetime
    ) -> ModelVersion:
        """Archive or unarchive a version (no change when it already is); return it.

        Raises:
            ModelNotFoundError: for an unknown model or version.
            RegistryError: archiving a version an alias points at (the aliases are named).
        """
        ...

    def delete_version(self, name: str, version: int, *, at: datetime) -> ModelVersion:
        """Delete a version (its number is never given again); return it as it was.

        Raises:
            ModelNotFoundError: for an unknown model or version (or one deleted already).
            RegistryError: deleting a version an alias points at (the aliases are named).
        """
        ...

    def set_tags(
        self, name: str, version: int, tags: Mapping[str, str], remove: Sequence[str] = ()
    ) -> ModelVersion:
        """Set ``tags`` and remove the keys ``remove`` on one version; return it.

        Raises:
            ModelNotFoundError: for an unknown model or version.
            RegistryError: for an invalid key or value, a key to remove the version does not
                have, or a key both set and removed.
        """
        ...

    def describe_version(self, name: str, version: int, description: str) -> ModelVersion:
        """Replace one version's description; return the version."""
        ...

    def describe_model(self, name: str, description: str) -> None:
        """Replace the model's description (raises `ModelNotFoundError`)."""
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


def unknown_version(
    name: str, version: int, numbers: Sequence[int], *, deleted_at: str | None = None
) -> ModelNotFoundError:
    """The error for a version number the model does not have (or had, and was deleted)."""
    gone = f" (it was deleted {deleted_at[:19].replace('T', ' ')} UTC)" if deleted_at else ""
    return ModelNotFoundError(
        f"model '{name}' has no version {version}{gone}; versions: {_versions_text(numbers)}",
        hint=f"use one of them, or '{name}@latest' for the newest",
    )


def no_live_version(name: str, archived: Sequence[int]) -> ModelNotFoundError:
    """The error for ``NAME``/``NAME@latest`` when no version is left to resolve to."""
    if archived:
        return ModelNotFoundError(
            f"every version of model '{name}' is archived ({_versions_text(archived)}), "
            f"so '{name}' and '{name}@latest' name none",
            hint=f"name one ('{name}:{archived[-1]}') or unarchive it: "
            f"`cellpipe models unarchive {name}:{archived[-1]}`",
        )
    return ModelNotFoundError(
        f"model '{name}' has no versions left (every one was deleted)",
        hint=f"register a new one: cellpipe.register_model(obj, '{name}')",
    )


def aliased(name: str, version: int, aliases: Sequence[str], action: str) -> RegistryError:
    """The error for archiving or deleting a version aliases point at."""
    names = ", ".join(sorted(aliases))
    first = sorted(aliases)[0]
    return RegistryError(
        f"cannot {action} {name}:{version}: the alias{'es' if len(aliases) > 1 else ''} "
        f"{names} point{'' if len(aliases) > 1 else 's'} at it",
        hint=f"move each alias first (`cellpipe models alias {name} {first} VERSION`) or "
        f"remove it (`cellpipe models alias {name} {first} --delete`)",
    )


def archived_alias(name: str, alias: str, version: int) -> RegistryError:
    """The error for pointing an alias at an archived version."""
    return RegistryError(
        f"cannot point {name}@{alias} at version {version}: it is archived",
        hint=f"unarchive it first: `cellpipe models unarchive {name}:{version}`",
    )


def _tag_changes(
    name: str,
    version: int,
    current: Mapping[str, str],
    tags: Mapping[str, str],
    remove: Sequence[str],
) -> dict[str, str]:
    """Return the tags after setting ``tags`` and removing ``remove`` (checked)."""
    for key, value in tags.items():
        if not isinstance(value, str):
            raise RegistryError(
                f"the value of tag {key!r} must be text, not {type(value).__name__}",
                hint="tags are key=value text pairs",
            )
        check_tag(key, value)
    both = sorted(set(tags) & set(remove))
    if both:
        raise RegistryError(f"tag {both[0]!r} is both set and removed", hint="give each key once")
    missing = sorted(k for k in set(remove) if k not in current)
    if missing:
        raise RegistryError(
            f"{name}:{version} has no tag {missing[0]!r}; tags: {_listing(sorted(current))}",
            hint="`cellpipe models show NAME:VERSION` lists the tags",
        )
    updated = {k: v for k, v in current.items() if k not in set(remove)}
    updated.update(tags)
    return dict(sorted(updated.items()))


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


def _strict_dumps(value: Any, *, what: str) -> str:
    """JSON without NaN or Infinity (an OIP input example is sent as a request body)."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(
            f"the {what} of a model version must be plain JSON: {exc}",
            hint="use finite numbers, strings, booleans, None, or lists and dicts of those",
        ) from exc


def _checked(draft: ModelVersion) -> ModelVersion:
    """Return ``draft`` with plain, read-only JSON fields (checked), no aliases, not archived."""
    params = json.loads(_dumps(dict(draft.parameters), what="parameters"))
    metrics = json.loads(_dumps(dict(draft.metrics), what="metrics"))
    packages = dict(draft.packages)
    for dist, version in packages.items():
        if not isinstance(dist, str) or not isinstance(version, str) or not dist:
            raise RegistryError(
                f"the packages of a model version map a distribution to its version as "
                f"text, not {dist!r}: {version!r}",
                hint="e.g. {'scikit-learn': '1.5.2', 'numpy': '2.1.3'}",
            )
    tags = _tag_changes(draft.name, draft.version, {}, dict(draft.tags), ())
    example = draft.input_example
    if example is not None:
        example = json.loads(_strict_dumps(example, what="input example"))
    _ts(draft.created_at)
    return replace(
        draft,
        parameters=MappingProxyType(params),
        metrics=MappingProxyType(metrics),
        packages=MappingProxyType(dict(sorted(packages.items()))),
        tags=MappingProxyType(tags),
        input_example=example,
        aliases=(),
        archived=False,
    )


# -- SQL -----------------------------------------------------------------------------------------

_VERSION_COLUMNS = (
    "name, version, digest, serializer, serializer_version, size, type_name, created_at,"
    " run_id, step, variable, parameters_json, metrics_json, signature_json, description,"
    " tags_json, archived_at, packages_json, input_example_json"
)
_LIVE = " AND deleted_at IS NULL"
"""Every read of versions but the number allocation skips deleted ones."""


class SqlModelStore:
    """`ModelStore` on the metadata store's database (schema v4 tables, v6 columns).

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

    def add_version(
        self, draft: ModelVersion, *, model_description: str = "", keep_number: bool = False
    ) -> ModelVersion:
        """Insert ``draft`` under the next version number of its name and return it."""
        draft = _checked(draft)
        last: BaseException | None = None
        for _ in range(_RETRIES):
            try:
                return self._insert_version(draft, model_description, keep_number)
            except self._metadata._db.integrity_errors as exc:
                last = exc  # a concurrent writer created the model or took the number
        raise RegistryError(
            f"could not register a version of model '{draft.name}': {last}",
            hint="other processes are registering the same model right now; try again",
        ) from last

    def _insert_version(
        self, draft: ModelVersion, model_description: str, keep_number: bool
    ) -> ModelVersion:
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
            # Deleted versions included: a number is never given twice.
            top = int(
                conn.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM model_versions WHERE name = :name",
                    {"name": draft.name},
                ).scalar()
            )
            number = _copy_number(draft, top) if keep_number else top + 1
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
                " :step, :variable, :params, :metrics, :signature, :description, :tags,"
                " NULL, :packages, :example)",
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
                    "tags": json.dumps(dict(draft.tags), sort_keys=True),
                    "packages": json.dumps(dict(draft.packages), sort_keys=True),
                    "example": (
                        None
                        if draft.input_example is None
                        else json.dumps(draft.input_example, allow_nan=False)
                    ),
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
            if version is not None:
                self._check_live(conn, name, version)
                if self._archived_at(conn, name, version) is not None:
                    raise archived_alias(name, alias, version)
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

    def _locked_version(self, conn: SqlConnection, name: str, version: int) -> ModelVersion:
        """Lock the model's row, check the version is live, return it (with its aliases)."""
        if not self._lock_model(conn, name):
            raise unknown_model(name, self._names(conn))
        self._check_live(conn, name, version)
        return self._one(conn, name, " AND version = :v", v=version)

    def set_archived(
        self, name: str, version: int, archived: bool, *, at: datetime
    ) -> ModelVersion:
        """Archive or unarchive a version (no change when it already is); return it."""
        with self._write() as conn:
            current = self._locked_version(conn, name, version)
            if archived and current.aliases:
                raise aliased(name, version, current.aliases, "archive")
            if current.archived != archived:
                conn.execute(
                    "UPDATE model_versions SET archived_at = :at"
                    " WHERE name = :name AND version = :v",
                    {"name": name, "v": version, "at": _ts(at) if archived else None},
                )
        return replace(current, archived=archived)

    def delete_version(self, name: str, version: int, *, at: datetime) -> ModelVersion:
        """Delete a version (its number is never given again); return it as it was."""
        with self._write() as conn:
            current = self._locked_version(conn, name, version)
            if current.aliases:
                raise aliased(name, version, current.aliases, "delete")
            conn.execute(
                "UPDATE model_versions SET deleted_at = :at WHERE name = :name AND version = :v",
                {"name": name, "v": version, "at": _ts(at)},
            )
        return current

    def set_tags(
        self, name: str, version: int, tags: Mapping[str, str], remove: Sequence[str] = ()
    ) -> ModelVersion:
        """Set ``tags`` and remove the keys ``remove`` on one version; return it."""
        with self._write() as conn:
            current = self._locked_version(conn, name, version)
            updated = _tag_changes(name, version, current.tags, tags, remove)
            conn.execute(
                "UPDATE model_versions SET tags_json = :tags WHERE name = :name AND version = :v",
                {"name": name, "v": version, "tags": json.dumps(updated, sort_keys=True)},
            )
        return replace(current, tags=MappingProxyType(updated))

    def describe_version(self, name: str, version: int, description: str) -> ModelVersion:
        """Replace one version's description; return the version."""
        with self._write() as conn:
            current = self._locked_version(conn, name, version)
            conn.execute(
                "UPDATE model_versions SET description = :d WHERE name = :name AND version = :v",
                {"name": name, "v": version, "d": description},
            )
        return replace(current, description=description)

    def describe_model(self, name: str, description: str) -> None:
        """Replace the model's description (raises `ModelNotFoundError`)."""
        with self._write() as conn:
            if not self._lock_model(conn, name):
                raise unknown_model(name, self._names(conn))
            conn.execute(
                "UPDATE models SET description = :d WHERE name = :name",
                {"name": name, "d": description},
            )

    # -- reads --------------------------------------------------------------------------------

    @staticmethod
    def _names(conn: SqlConnection) -> list[str]:
        return [r[0] for r in conn.execute("SELECT name FROM models ORDER BY name")]

    @staticmethod
    def _has_version(conn: SqlConnection, name: str, version: int) -> bool:
        row = conn.execute(
            "SELECT 1 FROM model_versions WHERE name = :name AND version = :version" + _LIVE,
            {"name": name, "version": version},
        ).first()
        return row is not None

    def _check_live(self, conn: SqlConnection, name: str, version: int) -> None:
        """Raise `unknown_version` (saying when it was deleted) unless the version is live."""
        if self._has_version(conn, name, version):
            return
        deleted = conn.execute(
            "SELECT deleted_at FROM model_versions WHERE name = :name AND version = :version",
            {"name": name, "version": version},
        ).scalar()
        raise unknown_version(name, version, self._numbers(conn, name), deleted_at=deleted)

    @staticmethod
    def _archived_at(conn: SqlConnection, name: str, version: int) -> str | None:
        found = conn.execute(
            "SELECT archived_at FROM model_versions WHERE name = :name AND version = :version",
            {"name": name, "version": version},
        ).scalar()
        return None if found is None else str(found)

    @staticmethod
    def _numbers(conn: SqlConnection, name: str, *, archived: bool | None = None) -> list[int]:
        which = {None: "", True: " AND archived_at IS NOT NULL", False: " AND archived_at IS NULL"}
        rows = conn.execute(
            "SELECT version FROM model_versions WHERE name = :name"
            + _LIVE
            + which[archived]
            + " ORDER BY version",
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
                f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE name = :name{_LIVE}"
                f"{where} ORDER BY version",
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
            tags=MappingProxyType(json.loads(row[15])),
            archived=row[16] is not None,
            packages=MappingProxyType(json.loads(row[17])),
            input_example=None if row[18] is None else json.loads(row[18]),
        )

    def _one(self, conn: SqlConnection, name: str, where: str, **params: Any) -> ModelVersion:
        rows = self._select(conn, name, where, **params)
        return self._version_from_row(rows[-1], self._aliases(conn, name))

    def get_version(self, name: str, version: int) -> ModelVersion:
        """Return one version (raises `ModelNotFoundError`)."""
        with self._read() as conn:
            if not self._exists(conn, name):
                raise unknown_model(name, self._names(conn))
            self._check_live(conn, name, version)
            return self._one(conn, name, " AND version = :v", v=version)

    def latest_version(self, name: str) -> ModelVersion:
        """Return the newest version of ``name`` not archived (raises `ModelNotFoundError`)."""
        with self._read() as conn:
            if not self._exists(conn, name):
                raise unknown_model(name, self._names(conn))
            live = self._numbers(conn, name, archived=False)
            if not live:
                raise no_live_version(name, self._numbers(conn, name, archived=True))
            return self._one(conn, name, " AND version = :v", v=live[-1])

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
                "SELECT m.name, m.created_at, m.description,"
                " MAX(CASE WHEN v.archived_at IS NULL THEN v.version END),"
                " COUNT(CASE WHEN v.archived_at IS NULL THEN v.version END),"
                " COUNT(v.archived_at)"
                " FROM models m LEFT JOIN model_versions v"
                " ON v.name = m.name AND v.deleted_at IS NULL"
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
                latest=None if r[3] is None else int(r[3]),
                version_count=int(r[4]),
                aliases=MappingProxyType(aliases.get(r[0], {})),
                archived_count=int(r[5]),
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
    versions: dict[int, ModelVersion] = field(default_factory=dict)  # live ones, by number
    deleted: dict[int, str] = field(default_factory=dict)  # number -> when (a tombstone)
    aliases: dict[str, int] = field(default_factory=dict)
    moves: list[AliasMove] = field(default_factory=list)

    def top(self) -> int:
        return max([0, *self.versions, *self.deleted])


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
    def _live(model: _MemoryModel, name: str, version: int) -> ModelVersion:
        found = model.versions.get(version)
        if found is None:
            raise unknown_version(
                name, version, sorted(model.versions), deleted_at=model.deleted.get(version)
            )
        return found

    @staticmethod
    def _with_aliases(version: ModelVersion, model: _MemoryModel) -> ModelVersion:
        aliases = tuple(sorted(a for a, v in model.aliases.items() if v == version.version))
        return replace(version, aliases=aliases)

    def add_version(
        self, draft: ModelVersion, *, model_description: str = "", keep_number: bool = False
    ) -> ModelVersion:
        """Insert ``draft`` under the next version number of its name and return it."""
        draft = _checked(draft)
        with self._lock:
            existing = self._models.get(draft.name)
            top = 0 if existing is None else existing.top()
            number = _copy_number(draft, top) if keep_number else top + 1
            model = self._models.setdefault(
                draft.name,
                _MemoryModel(created_at=draft.created_at, description=model_description),
            )
            stored = replace(draft, version=number)
            model.versions[number] = stored
        return stored

    def move_alias(self, name: str, alias: str, version: int | None, *, at: datetime) -> AliasMove:
        """Point ``alias`` at ``version`` (None removes it) and record the move."""
        _ts(at)
        with self._lock:
            model = self._model(name)
            if version is not None and self._live(model, name, version).archived:
                raise archived_alias(name, alias, version)
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

    def set_archived(
        self, name: str, version: int, archived: bool, *, at: datetime
    ) -> ModelVersion:
        """Archive or unarchive a version (no change when it already is); return it."""
        _ts(at)
        with self._lock:
            model = self._model(name)
            current = self._with_aliases(self._live(model, name, version), model)
            if archived and current.aliases:
                raise aliased(name, version, current.aliases, "archive")
            model.versions[version] = replace(model.versions[version], archived=archived)
            return replace(current, archived=archived)

    def delete_version(self, name: str, version: int, *, at: datetime) -> ModelVersion:
        """Delete a version (its number is never given again); return it as it was."""
        stamp = _ts(at)
        with self._lock:
            model = self._model(name)
            current = self._with_aliases(self._live(model, name, version), model)
            if current.aliases:
                raise aliased(name, version, current.aliases, "delete")
            del model.versions[version]
            model.deleted[version] = stamp
            return current

    def set_tags(
        self, name: str, version: int, tags: Mapping[str, str], remove: Sequence[str] = ()
    ) -> ModelVersion:
        """Set ``tags`` and remove the keys ``remove`` on one version; return it."""
        with self._lock:
            model = self._model(name)
            current = self._live(model, name, version)
            updated = _tag_changes(name, version, current.tags, tags, remove)
            model.versions[version] = replace(current, tags=MappingProxyType(updated))
            return self._with_aliases(model.versions[version], model)

    def describe_version(self, name: str, version: int, description: str) -> ModelVersion:
        """Replace one version's description; return the version."""
        with self._lock:
            model = self._model(name)
            current = self._live(model, name, version)
            model.versions[version] = replace(current, description=description)
            return self._with_aliases(model.versions[version], model)

    def describe_model(self, name: str, description: str) -> None:
        """Replace the model's description (raises `ModelNotFoundError`)."""
        with self._lock:
            self._model(name).description = description

    def get_version(self, name: str, version: int) -> ModelVersion:
        """Return one version (raises `ModelNotFoundError`)."""
        with self._lock:
            model = self._model(name)
            return self._with_aliases(self._live(model, name, version), model)

    def latest_version(self, name: str) -> ModelVersion:
        """Return the newest version of ``name`` not archived (raises `ModelNotFoundError`)."""
        with self._lock:
            model = self._model(name)
            live = sorted(n for n, v in model.versions.items() if not v.archived)
            if not live:
                archived = sorted(n for n, v in model.versions.items() if v.archived)
                raise no_live_version(name, archived)
            return self._with_aliases(model.versions[live[-1]], model)

    def alias_version(self, name: str, alias: str) -> ModelVersion:
        """Return the version ``alias`` points at (raises `ModelNotFoundError`)."""
        with self._lock:
            model = self._model(name)
            if alias not in model.aliases:
                raise unknown_alias(name, alias, list(model.aliases))
            return self._with_aliases(model.versions[model.aliases[alias]], model)

    def versions(self, name: str) -> list[ModelVersion]:
        """Return every version of ``name`` not deleted, oldest first (empty when unknown)."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                return []
            return [self._with_aliases(model.versions[n], model) for n in sorted(model.versions)]

    def list_models(self) -> list[ModelSummary]:
        """Return every model, by name."""
        with self._lock:
            summaries = []
            for name, m in sorted(self._models.items()):
                live = sorted(n for n, v in m.versions.items() if not v.archived)
                summaries.append(
                    ModelSummary(
                        name=name,
                        created_at=m.created_at,
                        description=m.description,
                        latest=live[-1] if live else None,
                        version_count=len(live),
                        aliases=MappingProxyType(dict(sorted(m.aliases.items()))),
                        archived_count=len(m.versions) - len(live),
                    )
                )
            return summaries

    def alias_history(self, name: str) -> list[AliasMove]:
        """Return every move of the model's aliases, oldest first (raises if unknown)."""
        with self._lock:
            return list(self._model(name).moves)


def _copy_number(draft: ModelVersion, top: int) -> int:
    """The number a copied version keeps, when the name has not reached it yet."""
    if draft.version <= top:
        raise RegistryError(
            f"cannot copy {draft.ref}: model '{draft.name}' already has version {top} here "
            "(a copy keeps its number, and numbers are never given twice)",
            hint="copy into a new, empty registry (the build context's own store)",
        )
    return draft.version


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
