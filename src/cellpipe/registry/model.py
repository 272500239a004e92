"""The registry's values: model versions, their signatures, and references to them.

Owns: `ModelVersion` (one immutable registered version of a named model, with lineage to the
run, step and variable it came from, the run's parameters and metrics, and its signature),
`Signature`/`TensorSpec` (inputs and outputs in the Open Inference Protocol's vocabulary),
`AliasMove` (one recorded move of an alias), `ModelRef` and `parse_model_ref` (the
``NAME``, ``NAME:VERSION`` and ``NAME@ALIAS`` forms every command and the server accept), and
`ModelSource` (what serving needs from a registry: resolve a reference, load the object).

Invariants: a version is immutable once registered; aliases are the only mutable part and
every move is recorded; version numbers start at 1 and grow by one per model name; a model
name is 1-64 characters of letters, digits, ``-``, ``_`` and ``.``, starting with a letter or
digit (it appears in URLs: ``/v2/models/NAME/versions/N``).

Must not depend on: the runner, the KFP compiler, notebooks, the CLI or the UI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cellpipe.errors import RegistryError
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
    "parse_model_ref",
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
        description: free text.
        aliases: the aliases pointing at this version now (not part of its identity).
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
    """Return ``name`` if it is a valid model name, else raise `RegistryError`."""
    if not _NAME.fullmatch(name):
        raise RegistryError(
            f"invalid model name {name!r}",
            hint="use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit",
        )
    return name


def check_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid alias, else raise `RegistryError`."""
    if not _ALIAS.fullmatch(alias) or alias.isdigit() or alias == "latest":
        raise RegistryError(
            f"invalid alias {alias!r}",
            hint="use 1-64 letters, digits, '-', '_' or '.', starting with a letter; "
            "'latest' is reserved (it always means the newest version)",
        )
    return alias


def parse_model_ref(text: str) -> ModelRef:
    """Parse ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.

    ``NAME`` alone and ``NAME@latest`` mean the newest version.

    Raises:
        RegistryError: when the text is none of these forms.
    """
    name, colon, version = text.partition(":")
    if colon:
        if not version.isdigit() or int(version) < 1:
            raise RegistryError(
                f"invalid model reference {text!r}: the version must be a number from 1",
                hint="write NAME:3, NAME@production or NAME",
            )
        return ModelRef(name=check_model_name(name), version=int(version))
    name, at, alias = text.partition("@")
    if at:
        if alias == "latest":
            return ModelRef(name=check_model_name(name))
        return ModelRef(name=check_model_name(name), alias=check_alias(alias))
    return ModelRef(name=check_model_name(name))


class ModelSource(Protocol):
    """What the server needs from a registry."""

    def resolve(self, ref: str | ModelRef) -> ModelVersion:
        """Return the version ``ref`` names (raises `ModelNotFoundError`)."""
        ...

    def versions(self, name: str) -> list[ModelVersion]:
        """Return every version of ``name``, oldest first (empty when unknown)."""
        ...

    def load(self, version: ModelVersion) -> Any:
        """Return the model object of ``version`` (deserialized from the artifact store)."""
        ...
