"""The model registry: register model versions, resolve references, move aliases, load.

Owns: `ModelRegistry`, the service behind ``cellpipe.register_model``, ``cellpipe.load_model``,
``cellpipe models ...`` and (through the `ModelSource` protocol) the model server.

A version's object is stored in the artifact store like any step output (same serializers,
same content address), so registering a step's output again costs no bytes; its row in the
metadata database holds the lineage (run, step, variable), the run's parameters and metrics,
the inferred `Signature`, the packages the object needs (`cellpipe.registry.packages`) and a
small input example (`cellpipe.registry.signature.example_inputs`).

A version's life after registration: its description and tags may be edited; it may be
archived (``NAME`` and ``NAME@latest`` skip it, no alias may point at it, ``NAME:N`` still
loads it) and unarchived; it may be deleted (its number is never given again, its bytes stay
in the content-addressed artifact store, the alias history that names it stays). A version an
alias points at can be neither archived nor deleted: the error names the aliases.

Invariants: names, aliases and tags are checked before anything is written; a version's
object, lineage, signature, packages and input example are never changed after
registration; every alias move is recorded (see `cellpipe.registry.store`).

Must not depend on: the runner, notebooks, the KFP compiler, the CLI (the run context is the
API's to find and pass in).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cellpipe.errors import RegistryError
from cellpipe.pipeline.model import JsonValue
from cellpipe.registry.model import (
    AliasMove,
    ModelRef,
    ModelVersion,
    Signature,
    check_alias,
    check_model_name,
    check_tag,
    parse_model_ref,
)
from cellpipe.registry.packages import needed_packages
from cellpipe.registry.signature import example_inputs, infer_signature
from cellpipe.registry.store import ModelStore, ModelSummary, model_store_for
from cellpipe.storage.protocols import ArtifactStore
from cellpipe.storage.records import ArtifactRef, MetadataStore

__all__ = ["ModelRegistry"]


class ModelRegistry:
    """Model versions in a project's stores; implements `ModelSource`.

    Args:
        metadata: the metadata store (its database also holds the registry's tables).
        artifact_store: where model objects are stored.

    Example::

        with open_project(settings) as project:
            registry = ModelRegistry(project.metadata, project.artifacts)
            version = registry.register(forest, "wine", input_example=X_test, alias="staging")
            model = registry.load(registry.resolve("wine@staging"))
    """

    def __init__(self, metadata: MetadataStore, artifact_store: ArtifactStore) -> None:
        self.metadata = metadata
        self.artifacts = artifact_store
        self.store: ModelStore = model_store_for(metadata)

    # -- ModelSource ------------------------------------------------------------------------

    def resolve(self, ref: str | ModelRef) -> ModelVersion:
        """Return the version ``ref`` names: ``NAME``, ``NAME:V``, ``NAME@ALIAS``, ``NAME@latest``.

        Raises:
            RegistryError: for a malformed reference.
            ModelNotFoundError: for an unknown model, version or alias (what exists is listed).
        """
        parsed = parse_model_ref(ref) if isinstance(ref, str) else ref
        if parsed.version is not None:
            return self.store.get_version(parsed.name, parsed.version)
        if parsed.alias is not None:
            return self.store.alias_version(parsed.name, parsed.alias)
        return self.store.latest_version(parsed.name)

    def versions(self, name: str) -> list[ModelVersion]:
        """Return every version of ``name``, oldest first (empty when unknown)."""
        return self.store.versions(name)

    def load(self, version: ModelVersion) -> Any:
        """Return the model object of ``version``, read from the artifact store.

        Raises:
            ArtifactNotFoundError: if the store no longer has the bytes.
            ArtifactCorruptedError: if the bytes no longer match the digest.
        """
        return self.load_artifact(version.artifact)

    # -- registering ------------------------------------------------------------------------

    def register(
        self,
        obj: Any,
        name: str,
        *,
        run_id: str | None = None,
        step: str | None = None,
        variable: str | None = None,
        parameters: Mapping[str, JsonValue] | None = None,
        metrics: Mapping[str, Any] | None = None,
        input_example: Any = None,
        description: str = "",
        alias: str | None = None,
        tags: Mapping[str, str] | None = None,
        packages: Mapping[str, str] | None = None,
        run_packages: Sequence[str] = (),
    ) -> ModelVersion:
        """Store ``obj`` and register it as the next version of ``name``.

        Args:
            obj: the model (any value the serializers can store: joblib for scikit-learn,
                cloudpickle for classes and functions defined in a notebook).
            name: the model's name.
            run_id: the run it came from, if any (lineage).
            step: the step it came from.
            variable: the step's variable holding it.
            parameters: the run's parameters.
            metrics: the run's metrics.
            input_example: an input example, for the signature (see
                `cellpipe.registry.signature`); its first 5 rows are kept as OIP inputs.
            description: free text about this version (also the model's, on its first one).
            alias: point this alias at the new version too (e.g. ``staging``).
            tags: key -> value tags of the new version.
            packages: distribution -> version the object needs; None finds them from the
                object (`cellpipe.registry.packages.needed_packages`).
            run_packages: the distributions the run imported, used when the object itself
                names no third-party module (a function defined in a notebook).

        Returns:
            The new version (with ``alias`` among its aliases).

        Raises:
            RegistryError: for an invalid name, alias or tag (nothing is stored).
            SerializationError: when the object cannot be stored.
        """
        check_model_name(name)
        if alias is not None:
            check_alias(alias)
        for key, value in (tags or {}).items():
            check_tag(key, value)
        artifact = self._store_object(obj, name)
        if packages is None:
            packages = needed_packages(obj, serializer=artifact.serializer, fallback=run_packages)
        return self._add(
            artifact,
            name,
            tags=tags,
            packages=packages,
            input_example=example_inputs(input_example) if input_example is not None else None,
            signature=infer_signature(obj, input_example),
            run_id=run_id,
            step=step,
            variable=variable,
            parameters=parameters,
            metrics=metrics,
            description=description,
            alias=alias,
        )

    def register_artifact(
        self,
        artifact: ArtifactRef,
        name: str,
        *,
        run_id: str | None = None,
        step: str | None = None,
        variable: str | None = None,
        parameters: Mapping[str, JsonValue] | None = None,
        metrics: Mapping[str, Any] | None = None,
        signature: Signature | None = None,
        input_example: Any = None,
        description: str = "",
        alias: str | None = None,
        tags: Mapping[str, str] | None = None,
        packages: Mapping[str, str] | None = None,
        run_packages: Sequence[str] = (),
    ) -> ModelVersion:
        """Register a value that is already stored (a step output) as the next version.

        Without ``signature`` (or ``packages``) the object is loaded once to infer it (from
        ``input_example``, or from what the model says it takes, e.g. scikit-learn's
        ``n_features_in_``; the packages from what the object is made of, else
        ``run_packages``).

        Raises:
            RegistryError: for an invalid name, alias or tag, or bytes the artifact store lacks.
        """
        check_model_name(name)
        if alias is not None:
            check_alias(alias)
        for key, value in (tags or {}).items():
            check_tag(key, value)
        if not self.artifacts.exists(artifact.digest):
            raise RegistryError(
                f"cannot register {artifact.digest} as model '{name}': the artifact store "
                "does not have these bytes",
                hint="register an output of a run recorded in this project's stores",
            )
        if signature is None or packages is None:
            try:
                obj = self.load_artifact(artifact)
            except Exception:  # an object that no longer loads still gets a version
                obj = None
            if obj is not None and signature is None:
                signature = infer_signature(obj, input_example)
            if packages is None:
                packages = needed_packages(
                    obj, serializer=artifact.serializer, fallback=run_packages
                )
        return self._add(
            artifact,
            name,
            tags=tags,
            packages=packages,
            input_example=example_inputs(input_example) if input_example is not None else None,
            signature=signature,
            run_id=run_id,
            step=step,
            variable=variable,
            parameters=parameters,
            metrics=metrics,
            description=description,
            alias=alias,
        )

    def load_artifact(self, artifact: ArtifactRef) -> Any:
        """Return the value stored as ``artifact``."""
        from cellpipe.storage.serializers import deserialize

        return deserialize(artifact.serializer, self.artifacts.local_path(artifact.digest))

    def _store_object(self, obj: Any, name: str) -> ArtifactRef:
        scratch = getattr(self.artifacts, "scratch_dir", None)
        if callable(scratch):  # local and remote stores: the move is a rename
            return self._put(obj, name, Path(scratch()))
        with tempfile.TemporaryDirectory(prefix="cellpipe-model-") as tmp:
            return self._put(obj, name, Path(tmp))

    def _put(self, obj: Any, name: str, folder: Path) -> ArtifactRef:
        from cellpipe.storage.serializers import serialize, type_name

        serializer, path = serialize(obj, folder, variable=name)
        size = path.stat().st_size
        try:
            digest = self.artifacts.put_file(path, move=True)
        finally:
            path.unlink(missing_ok=True)
        return ArtifactRef(
            digest=digest,
            serializer=serializer.name,
            serializer_version=serializer.version,
            size=size,
            type_name=type_name(obj),
        )

    def _add(
        self,
        artifact: ArtifactRef,
        name: str,
        *,
        signature: Signature | None,
        run_id: str | None,
        step: str | None,
        variable: str | None,
        parameters: Mapping[str, JsonValue] | None,
        metrics: Mapping[str, Any] | None,
        description: str,
        alias: str | None,
        tags: Mapping[str, str] | None,
        packages: Mapping[str, str] | None,
        input_example: Any,
    ) -> ModelVersion:
        draft = ModelVersion(
            name=name,
            version=0,  # the store allocates the number
            artifact=artifact,
            created_at=datetime.now(UTC),
            run_id=run_id,
            step=step,
            variable=variable,
            parameters=dict(parameters or {}),
            metrics=dict(metrics or {}),
            signature=signature,
            description=description,
            tags=dict(tags or {}),
            packages=dict(packages or {}),
            input_example=input_example,
        )
        version = self.store.add_version(draft, model_description=description)
        if alias is None:
            return version
        self.store.move_alias(name, alias, version.version, at=datetime.now(UTC))
        return self.store.get_version(name, version.version)

    def copy_version(self, version: ModelVersion, source: ModelRegistry) -> ModelVersion:
        """Copy one version of ``source`` into this (usually empty) registry, keeping its number.

        The stored bytes are copied as they are (checked against their digest on the way), so
        the copy's artifact is the same content address and loads as ``source.load`` would;
        the name, number, lineage fields, parameters, metrics, signature, packages, tags,
        description (also the model's, when the copy creates it) and input example are kept;
        aliases are not copied and the copy is not archived.

        Raises:
            RegistryError: when this registry already has that name at that number or a
                higher one (numbers are never given twice).
            ArtifactNotFoundError: if ``source`` no longer has the bytes.
            ArtifactCorruptedError: if they no longer match their digest.
        """
        check_model_name(version.name)
        if not self.artifacts.exists(version.artifact.digest):
            path = source.artifacts.local_path(version.artifact.digest)
            self.artifacts.put_file(path, move=False)
        draft = replace(
            version,
            tags=dict(version.tags),
            packages=dict(version.packages),
            aliases=(),
            archived=False,
        )
        return self.store.add_version(
            draft, model_description=version.description, keep_number=True
        )

    # -- a version's life: archive, delete, tags, descriptions ----------------------------------

    def archive(self, name: str, version: int) -> ModelVersion:
        """Archive a version: ``NAME`` skips it and no alias may point at it (no-op if it is).

        Raises:
            ModelNotFoundError: for an unknown model or version.
            RegistryError: when an alias points at it (the aliases are named).
        """
        check_model_name(name)
        return self.store.set_archived(name, version, True, at=datetime.now(UTC))

    def unarchive(self, name: str, version: int) -> ModelVersion:
        """Bring an archived version back (no-op if it is not archived).

        Raises:
            ModelNotFoundError: for an unknown model or version.
        """
        check_model_name(name)
        return self.store.set_archived(name, version, False, at=datetime.now(UTC))

    def delete_version(self, name: str, version: int) -> ModelVersion:
        """Delete a version and return it as it was.

        Its number is never given again; its bytes stay in the artifact store (other versions
        and step outputs may share them); the alias history keeps it.

        Raises:
            ModelNotFoundError: for an unknown model or version.
            RegistryError: when an alias points at it (the aliases are named).
        """
        check_model_name(name)
        return self.store.delete_version(name, version, at=datetime.now(UTC))

    def set_tags(
        self, name: str, version: int, tags: Mapping[str, str], remove: Sequence[str] = ()
    ) -> ModelVersion:
        """Set ``tags`` (key -> value) and remove the keys in ``remove`` on one version.

        Raises:
            ModelNotFoundError: for an unknown model or version.
            RegistryError: for an invalid key or value, or removing a key it does not have.
        """
        check_model_name(name)
        return self.store.set_tags(name, version, tags, remove)

    def describe(self, name: str, version: int | None, description: str) -> ModelVersion | None:
        """Replace a version's description (``version`` None: the model's); return the version.

        Raises:
            ModelNotFoundError: for an unknown model or version.
        """
        check_model_name(name)
        if version is None:
            self.store.describe_model(name, description)
            return None
        return self.store.describe_version(name, version, description)

    # -- aliases and listings ---------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> AliasMove:
        """Point ``alias`` of model ``name`` at ``version`` (recorded in its history).

        Raises:
            RegistryError: for an invalid alias (``latest`` is reserved).
            ModelNotFoundError: for an unknown model or version.
        """
        check_model_name(name)
        check_alias(alias)
        return self.store.move_alias(name, alias, version, at=datetime.now(UTC))

    def remove_alias(self, name: str, alias: str) -> AliasMove:
        """Remove ``alias`` from model ``name`` (recorded in its history).

        Raises:
            ModelNotFoundError: for an unknown model or alias.
        """
        check_model_name(name)
        check_alias(alias)
        return self.store.move_alias(name, alias, None, at=datetime.now(UTC))

    def alias_history(self, name: str) -> list[AliasMove]:
        """Return every move of the model's aliases, oldest first.

        Raises:
            ModelNotFoundError: for an unknown model.
        """
        check_model_name(name)
        return self.store.alias_history(name)

    def list_models(self) -> list[ModelSummary]:
        """Return every registered model, by name."""
        return self.store.list_models()
