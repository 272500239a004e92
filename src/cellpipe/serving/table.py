"""The model versions one server serves, by name and version.

Owns: `ModelTable` (for each served name the version its reference resolved to, loaded at
start, and any other version of that name, loaded from the `ModelSource` on first use).

Invariants: loads are serialised by a lock, so a version is loaded once.

Must not depend on: the web framework, the runner, kfp or notebooks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from cellpipe.errors import ModelNotFoundError, ServingError
from cellpipe.registry.model import ModelRef, ModelSource, ModelVersion, parse_model_ref
from cellpipe.serving.adapters import adapt
from cellpipe.serving.protocol import ServedModel
from cellpipe.serving.tensors import RequestError

__all__ = ["ModelTable"]

logger = logging.getLogger(__name__)


def _load(source: ModelSource, version: ModelVersion) -> ServedModel:
    return ServedModel(version=version, adapter=adapt(source.load(version), version))


class ModelTable:
    """The model versions one server serves.

    Args:
        source: where versions are resolved and loaded from (the registry).
        defaults: for each served name, the loaded version its reference resolved to.
    """

    def __init__(self, source: ModelSource, defaults: Sequence[ServedModel]) -> None:
        self.source = source
        self.defaults = {model.version.name: model for model in defaults}
        self._loaded = {(m.version.name, m.version.version): m for m in defaults}
        self._lock = threading.Lock()

    @classmethod
    def resolve(cls, refs: Sequence[str], source: ModelSource) -> ModelTable:
        """Resolve and load every reference now, so a missing model fails before serving.

        Raises:
            RegistryError: a reference is invalid or names no version (`ModelNotFoundError`).
            ServingError: no references, two references to different versions of one name,
                or a model object that cannot be served.
        """
        if not refs:
            raise ServingError(
                "no model to serve", hint="name at least one model: NAME, NAME:N or NAME@ALIAS"
            )
        chosen: dict[str, tuple[str, ModelVersion]] = {}
        for text in refs:
            version = source.resolve(parse_model_ref(text))
            earlier = chosen.get(version.name)
            if earlier is not None and earlier[1].version != version.version:
                raise ServingError(
                    f"{earlier[0]!r} and {text!r} are different versions of model "
                    f"{version.name!r} ({earlier[1].version} and {version.version}); "
                    f"/v2/models/{version.name} can serve only one",
                    hint=f"serve one of them; any version stays reachable at "
                    f"/v2/models/{version.name}/versions/N",
                )
            chosen[version.name] = (text, version)
        return cls(source, [_load(source, version) for _, version in chosen.values()])

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """Return the served model ``name`` (its resolved version, or version ``version``).

        Raises:
            RequestError: 404 when the name is not served or the version does not exist,
                500 when the version cannot be loaded or served.
        """
        default = self.defaults.get(name)
        if default is None:
            served = ", ".join(sorted(self.defaults))
            raise RequestError(f"model {name!r} is not served here (served: {served})", status=404)
        if version is None:
            return default
        if not version.isdigit() or int(version) < 1:
            raise RequestError(
                f"model {name!r} has no version {version!r}; versions are numbers from 1",
                status=404,
            )
        key = (name, int(version))
        with self._lock:
            model = self._loaded.get(key)
            if model is not None:
                return model
            try:
                resolved = self.source.resolve(ModelRef(name=name, version=int(version)))
            except ModelNotFoundError as exc:
                raise RequestError(f"model {name!r} has no version {version}", status=404) from exc
            try:
                model = _load(self.source, resolved)
            except ServingError as exc:
                raise RequestError(exc.message, status=500, hint=exc.hint) from exc
            self._loaded[key] = model
            logger.info("loaded %s on first use", resolved.ref)
            return model

    def version_names(self, name: str) -> list[str]:
        """Return every version of ``name`` the source knows, as strings, oldest first."""
        return [str(v.version) for v in self.source.versions(name)]
