"""KServe ``InferenceService`` manifests for a registered model version.

Owns: `inference_service` (the manifest as a dict) and `write_manifest` (as YAML text, with a
comment header saying what the user must set). The manifest is ``serving.kserve.io/v1beta1``
with a predictor of model format ``sklearn`` and ``protocolVersion: v2``, so KServe serves it
with a runtime that speaks the same Open Inference Protocol as `cellpipe serve`.

Invariants: only scikit-learn objects get a manifest (KServe's sklearn runtimes load a
``model.joblib`` file, which cellpipe's ``joblib`` artifacts are); anything else is a
`ServingError` saying so. ``storageUri`` is the given URI or a ``s3://SET-ME/...``
placeholder the user must replace with the folder (bucket prefix, PVC path, ...) holding the
version's artifact copied as ``model.joblib``. Output is deterministic (no timestamps).

Must not depend on: the runner, kfp or notebooks. PyYAML is optional: without it the manifest
is written as JSON, which is valid YAML.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cellpipe.errors import ServingError
from cellpipe.registry.model import ModelVersion

__all__ = ["PLACEHOLDER_PREFIX", "inference_service", "render_manifest", "write_manifest"]

PLACEHOLDER_PREFIX = "s3://SET-ME"
"""The start of the placeholder ``storageUri``; replace it before applying the manifest."""


def _resource_name(name: str) -> str:
    # Kubernetes names are DNS-1035 labels: lowercase letters, digits and '-', from a letter.
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not text or not text[0].isalpha():
        text = f"model-{text}".rstrip("-")
    return text[:63].rstrip("-")


def _is_sklearn(version: ModelVersion) -> bool:
    return version.artifact.type_name.split(".", 1)[0] == "sklearn"


def inference_service(
    version: ModelVersion,
    *,
    storage_uri: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """Return the KServe ``InferenceService`` of ``version`` as a dict.

    Args:
        version: a registered version whose object is a scikit-learn estimator or pipeline.
        storage_uri: the folder holding ``model.joblib``; default a ``s3://SET-ME/...``
            placeholder.
        name: the resource name (default: the model name as a DNS label).
        namespace: the Kubernetes namespace (default: none, kubectl's current one).

    Raises:
        ServingError: the object is not a scikit-learn object.
    """
    if not _is_sklearn(version):
        raise ServingError(
            f"model {version.ref} is a {version.artifact.type_name}; KServe manifests are "
            "written for scikit-learn objects only",
            hint="serve it with cellpipe.serving.serve, or package it in a custom KServe predictor",
        )
    metadata: dict[str, Any] = {"name": _resource_name(name or version.name)}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = {
        "app.kubernetes.io/managed-by": "cellpipe",
        "cellpipe.dev/model": _resource_name(version.name),
        "cellpipe.dev/version": str(version.version),
    }
    annotations = {
        "cellpipe.dev/model-version": version.ref,
        "cellpipe.dev/artifact": str(version.artifact.digest),
        "cellpipe.dev/artifact-type": version.artifact.type_name,
    }
    if version.run_id:
        annotations["cellpipe.dev/run"] = version.run_id
    metadata["annotations"] = annotations
    uri = storage_uri or f"{PLACEHOLDER_PREFIX}/models/{version.name}/{version.version}"
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "protocolVersion": "v2",
                    "storageUri": uri,
                }
            }
        },
    }


def render_manifest(manifest: dict[str, Any]) -> str:
    """Return ``manifest`` as YAML text with a header comment (JSON if PyYAML is missing)."""
    uri = manifest["spec"]["predictor"]["model"]["storageUri"]
    annotations = manifest["metadata"].get("annotations", {})
    header = [
        f"# KServe InferenceService for {annotations.get('cellpipe.dev/model-version', '')}, "
        "written by cellpipe.",
        "# storageUri must be the folder (s3://, gs://, pvc://, https://) holding this model "
        "version's",
        f"# artifact {annotations.get('cellpipe.dev/artifact', '')} copied as model.joblib.",
    ]
    if uri.startswith(PLACEHOLDER_PREFIX):
        header.append("# SET storageUri BEFORE APPLYING: it is a placeholder.")
    header.append("# Apply with: kubectl apply -f THIS_FILE")
    try:
        import yaml  # PyYAML is optional (the kfp extra); JSON is valid YAML too
    except ImportError:
        body = json.dumps(manifest, indent=2) + "\n"
    else:
        body = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n" + body


def write_manifest(
    version: ModelVersion,
    path: str | Path,
    *,
    storage_uri: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
) -> Path:
    """Write the KServe ``InferenceService`` of ``version`` to ``path`` as YAML.

    Args:
        version: a registered scikit-learn version (see `inference_service`).
        path: the file to write (its folder must exist).
        storage_uri: the folder holding ``model.joblib``; default a placeholder to replace.
        name: the resource name (default: the model name as a DNS label).
        namespace: the Kubernetes namespace.

    Returns:
        The path written.

    Raises:
        ServingError: the object is not a scikit-learn object, or the file cannot be written.
    """
    manifest = inference_service(version, storage_uri=storage_uri, name=name, namespace=namespace)
    target = Path(path)
    try:
        target.write_text(render_manifest(manifest), encoding="utf-8")
    except OSError as exc:
        raise ServingError(f"cannot write the manifest {target}: {exc.strerror or exc}") from exc
    return target
