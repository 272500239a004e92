"""The registry's values: model versions, their signatures, and references to them.

Owns: `ModelVersion` (one immutable registered version of a named model, with lineage to the
run, step and variable it came from, the run's parameters and metrics, and its signature),
`Signature`/`TensorSpec` (inputs and outputs in the Open Inference Protocol's vocabulary),
`AliasMove` (one recorded move of an alias), `ModelRef` and `parse_model_ref` (the
``NAME``, ``NAME:VERSION`` and ``NAME@ALIAS`` forms every command and the server accept), and
`ModelSource` (what serving needs from a registry: resolve a reference, load the object).

Invariants: a version's object, lineage, signature, packages and input example never change
once registered; what may change is its description, its tags and whether it is archived, and
the aliases, whose every move is recorded; version numbers start at 1 and grow by one per
model name, and a deleted version's number is never given again; a version number is ASCII
digits with a value from 1 to 2**63-1 (`parse_version`: superscript, Arabic-Indic or
fullwidth digits are refused, as is a number SQLite cannot store); a model name is 1-64
characters of letters, digits, ``-``, ``_`` and ``.``, starting with a letter or digit (it
appears in URLs: ``/v2/models/NAME/versions/N``); a tag key is 1-128 letters, digits, ``_``,
``-``, ``.`` or ``/``, starting with a letter or ``_`` (`check_tag`).

Must not depend on: the runner, the KFP compiler, notebooks, the CLI or the UI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cellpipe.errors import InvalidModelRefError
from cellpipe.pipeline.model import JsonValue
from cellpipe.storage.records import ArtifactRef

__all__ = [
    "DATATYPES",
    "AliasMove",
    "ModelRef",
    "ModelSource",
    "ModelVersion",
    "Signature",
    "TensorSpec",
    "check_alias",
    "check_model_name",
    "check_tag",
    "parse_model_ref",
    "parse_version",
]

DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)
"""The tensor data types of the Open Inference Protocol v2."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
_VERSION = re.compile(r"[0-9]{1,40}")  # ASCII: str.isdigit accepts superscripts too
_TAG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]{0,127}")

MAX_VERSION = 2**63 - 1
"""The largest version number (a signed 64-bit integer: SQLite's and PostgreSQL's BIGINT)."""

MAX_TAG_VALUE = 5000
"""The longest tag value, in characters (MLflow's limit)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorSpec:
    """One input or output tensor: name, OIP data type and shape (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the OIP metadata form ``{"name", "datatype", "shape"}``."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        """Build from the dict `to_json` returns."""
        return cls(
            name=str(data["name"]),
            datatype=str(data["datatype"]),
            shape=tuple(int(d) for d in data["shape"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Signature:
    """What a model takes and returns, as OIP tensors (inferred at registration)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_json(self) -> dict[str, Any]:
        """Return ``{"inputs": [...], "outputs": [...]}``."""
        return {
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Signature:
        """Build from the dict `to_json` returns."""
        return cls(
            inputs=tuple(TensorSpec.from_json(t) for t in data.get("inputs", ())),
            outputs=tuple(TensorSpec.from_json(t) for t in data.get("outputs", ())),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelVersion:
    """One registered version of a model: immutable, with its lineage.

    Attributes:
        name: the model's name.
        version: 1, 2, ... within the name.
        artifact: the stored model object (digest, serializer, size, type name).
        created_at: when it was registered (UTC).
        run_id: the run that produced it, when it came from a run.
        step: the step that produced it.
        variable: the step's variable holding it.
        parameters: the run's parameters.
        metrics: the run's metrics (those known at registration).
        signature: inputs and outputs, when they could be inferred.
        description: free text (may be edited).
        aliases: the aliases pointing at this version now (not part of its identity).
        tags: key -> value (may be edited; keys checked by `check_tag`).
        archived: archived versions are skipped when ``NAME`` or ``NAME@latest`` is resolved
            and cannot get an alias; ``NAME:N`` still names and loads them.
        packages: distribution -> version the object needs to load and run (scikit-learn,
            numpy, ...), recorded at registration.
        input_example: a small Open Inference Protocol ``inputs`` list (at most 5 rows of
            the registration's example), or None.
    """

    name: str
    version: int
    artifact: ArtifactRef
    created_at: datetime
    run_id: str | None = None
    step: str | None = None
    variable: str | None = None
    parameters: Mapping[str, JsonValue] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    signature: Signature | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    archived: bool = False
    packages: Mapping[str, str] = field(default_factory=dict)
    input_example: Any = None

    @property
    def ref(self) -> str:
        """``NAME:VERSION``."""
        return f"{self.name}:{self.version}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AliasMove:
    """One recorded move of an alias (``version`` None: the alias was removed)."""

    name: str
    alias: str
    version: int | None
    previous: int | None
    moved_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRef:
    """A parsed reference: a name with at most one of a version or an alias."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise `InvalidModelRefError`."""
    if not _NAME.fullmatch(name):
        raise InvalidModelRefError(
            f"invalid model name {name!r}",
            hint="use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit",
        )
    return name


def check_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid alias, else raise `InvalidModelRefError`."""
    if not _ALIAS.fullmatch(alias) or alias.isdigit() or alias == "latest":
        raise InvalidModelRefError(
            f"invalid alias {alias!r}",
            hint="use 1-64 letters, digits, '-', '_' or '.', starting with a letter; "
            "'latest' is reserved (it always means the newest version)",
        )
    return alias


def parse_version(text: str, *, ref: str | None = None) -> int:
    """Return the version number ``text`` spells: ASCII digits, 1 to `MAX_VERSION`.

    Args:
        text: the version as written (``3``).
        ref: the whole reference it came from, for the message.

    Raises:
        InvalidModelRefError: for anything else (``0``, ``x``, ``²``, fullwidth digits, 20 digits).
    """
    where = f"model reference {ref!r}" if ref is not None else f"version {text!r}"
    if not _VERSION.fullmatch(text):
        raise InvalidModelRefError(
            f"invalid {where}: the version must be a number from 1 in ASCII digits",
            hint="write NAME:3, NAME@production or NAME",
        )
    number = int(text)
    if not 1 <= number <= MAX_VERSION:
        raise InvalidModelRefError(
            f"invalid {where}: the version must be a number from 1 to {MAX_VERSION}",
            hint="write NAME:3, NAME@production or NAME",
        )
    return number


def check_tag(key: str, value: str | None = None) -> str:
    """Return ``key`` if it is a valid tag key (and ``value`` a valid value), else raise.

    Raises:
        InvalidModelRefError: for a key that is not 1-128 letters, digits, ``_``, ``-``, ``.`` or
            ``/`` starting with a letter or ``_``, or a value longer than `MAX_TAG_VALUE`
            characters or holding a control character other than tab and newline.
    """
    if not _TAG_KEY.fullmatch(key):
        raise InvalidModelRefError(
            f"invalid tag key {key!r}",
            hint="use 1-128 letters, digits, '_', '-', '.' or '/', starting with a letter "
            "or '_' (team, data.version, owner)",
        )
    if value is not None:
        if len(value) > MAX_TAG_VALUE:
            raise InvalidModelRefError(
                f"the value of tag {key!r} has {len(value)} characters; at most "
                f"{MAX_TAG_VALUE} are kept",
                hint="store long text in the description, or a link to it in the tag",
            )
        if any(ord(c) < 32 and c not in "\t\n" for c in value) or "\x7f" in value:
            raise InvalidModelRefError(
                f"the value of tag {key!r} holds a control character",
                hint="use printable text (tabs and newlines are kept)",
            )
    return key


def parse_model_ref(text: str) -> ModelRef:
    """Parse ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.

    ``NAME`` alone and ``NAME@latest`` mean the newest version.

    Raises:
        InvalidModelRefError: when the text is none of these forms (a version must be ASCII
            digits from 1 to `MAX_VERSION`: see `parse_version`).
    """
    name, colon, version = text.partition(":")
    if colon:
        number = parse_version(version, ref=text)
        return ModelRef(name=check_model_name(name), version=number)
    name, at, alias = text.partition("@")
    if at:
        if alias == "latest":
            return ModelRef(name=check_model_name(name))
        return ModelRef(name=check_model_name(name), alias=check_alias(alias))
    return ModelRef(name=check_model_name(name))


class ModelSource(Protocol):
    """What the server needs from a registry."""

    def resolve(self, ref: str | ModelRef) -> ModelVersion:
        """Return the version ``ref`` names (raises `ModelNotFoundError`).

        ``NAME`` and ``NAME@latest`` skip archived versions; ``NAME:N`` does not.
        """
        ...

    def versions(self, name: str) -> list[ModelVersion]:
        """Return every version of ``name`` not deleted (archived ones too), oldest first.

        Empty when the name is unknown.
        """
        ...

    def load(self, version: ModelVersion) -> Any:
        """Return the model object of ``version`` (deserialized from the artifact store)."""
        ...
