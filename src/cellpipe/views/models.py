"""The documents of the model registry: a version, an alias move, the model list.

Owns: the ``--json`` documents of ``cellpipe models list|show|register|alias|history`` and of
``archive|unarchive|delete|tag|describe`` (a version's document).

Must not depend on: api, cli, ui.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cellpipe.registry.model import AliasMove, ModelVersion


def version_document(version: ModelVersion) -> dict[str, Any]:
    """Return a model version as a JSON-ready dict."""
    return {
        "name": version.name,
        "version": version.version,
        "ref": version.ref,
        "created_at": version.created_at.isoformat(),
        "description": version.description,
        "aliases": list(version.aliases),
        "artifact": version.artifact.to_json(),
        "run_id": version.run_id,
        "step": version.step,
        "variable": version.variable,
        "parameters": dict(version.parameters),
        "metrics": dict(version.metrics),
        "signature": version.signature.to_json() if version.signature is not None else None,
        "archived": version.archived,
        "tags": dict(version.tags),
        "packages": dict(version.packages),
        "input_example": version.input_example,
    }


def version_detail_document(
    version: ModelVersion, others: Sequence[ModelVersion]
) -> dict[str, Any]:
    """Return the ``cellpipe models show REF --json`` document: the version and its siblings."""
    document = version_document(version)
    document["versions"] = [
        {
            "version": v.version,
            "created_at": v.created_at.isoformat(),
            "aliases": list(v.aliases),
            "archived": v.archived,
        }
        for v in others
    ]
    return document


def move_document(move: AliasMove) -> dict[str, Any]:
    """Return an alias move as a JSON-ready dict."""
    return {
        "name": move.name,
        "alias": move.alias,
        "version": move.version,
        "previous": move.previous,
        "moved_at": move.moved_at.isoformat(),
    }


def models_document(models: Sequence[Any]) -> dict[str, Any]:
    """Return the ``cellpipe models list --json`` document (``RegisteredModel`` records)."""
    return {"models": [m.to_json() for m in models]}
