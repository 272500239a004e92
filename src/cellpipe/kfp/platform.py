"""The kfp-kubernetes PlatformSpec document: pod metadata, secrets and PVC mounts per step.

Owns: `platform_spec`, the second YAML document of a compiled pipeline, in the shape
kfp-kubernetes writes (``platforms.kubernetes.deploymentSpec.executors.<label>``, each a
``KubernetesExecutorConfig``). It is only emitted when some step needs it.

What maps to what:

- ``annotation:KEY:VALUE`` / ``label:KEY:VALUE`` -> ``podMetadata.annotations`` / ``labels``;
- ``secret:NAME:/mount/path`` -> ``secretAsVolume`` (the secret's keys become files there);
- ``secret:NAME:KEY=ENV[,KEY=ENV...]`` -> ``secretAsEnv`` (each key as an environment
  variable);
- notebook metadata ``volumes`` entries of type ``pvc`` (``{"type": "pvc", "name": CLAIM,
  "mount_point": PATH}``) -> ``pvcMount`` on every step. Kale's other volume types (new PVCs,
  snapshots, clones) need a cluster-side step and are a `CompileError`.

Invariants: pure, deterministic; the result is validated against kfp-kubernetes' protobuf in
`cellpipe.kfp.validate`.

Must not depend on: the runner, storage, kfp.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cellpipe.errors import CompileError
from cellpipe.pipeline.model import JsonValue, Pipeline, Step

_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_FORMS = "secret:NAME:/mount/path or secret:NAME:KEY=ENV_VAR[,KEY=ENV_VAR...]"


def _constant(value: str) -> dict[str, Any]:
    return {"runtimeValue": {"constant": value}}


def _secret(step: Step, spec: str) -> tuple[str, dict[str, Any]]:
    name, sep, rest = spec.partition(":")
    if not sep or not _SECRET_NAME.match(name) or not rest:
        raise CompileError(
            f"step '{step.name}' has secret:{spec}, which is not one of the supported forms "
            f"({SECRET_FORMS})",
            hint="write for example secret:db-credentials:/secrets/db or "
            "secret:db-credentials:password=DB_PASSWORD",
        )
    if rest.startswith("/"):
        return "secretAsVolume", {
            "secretName": name,
            "secretNameParameter": _constant(name),
            "mountPath": rest,
            "optional": False,
        }
    pairs = []
    for item in rest.split(","):
        key, eq, env = item.partition("=")
        if not eq or not key or not _ENV_NAME.match(env):
            raise CompileError(
                f"step '{step.name}' has secret:{spec}; '{item}' is not KEY=ENV_VAR "
                f"(supported forms: {SECRET_FORMS})",
                hint="name an environment variable for each key, e.g. password=DB_PASSWORD",
            )
        pairs.append({"secretKey": key, "envVar": env})
    return "secretAsEnv", {
        "secretName": name,
        "secretNameParameter": _constant(name),
        "keyToEnv": pairs,
        "optional": False,
    }


def _pvc_mounts(pipeline: Pipeline) -> list[dict[str, Any]]:
    mounts = []
    for volume in pipeline.settings.volumes:
        kind = volume.get("type", "pvc")
        claim = volume.get("name")
        path = volume.get("mount_point")
        if kind != "pvc":
            raise CompileError(
                f"notebook volume {_describe(volume)} has type {kind!r}; the Kubeflow "
                "Pipelines target mounts existing claims only (type 'pvc')",
                hint="create the claim on the cluster and list it with type 'pvc'",
            )
        if not isinstance(claim, str) or not claim or not isinstance(path, str) or not path:
            raise CompileError(
                f"notebook volume {_describe(volume)} needs a 'name' (the claim) and a "
                "'mount_point'",
                hint='write {"type": "pvc", "name": "my-claim", "mount_point": "/data"}',
            )
        mounts.append({"constant": claim, "pvcNameParameter": _constant(claim), "mountPath": path})
    return sorted(mounts, key=lambda m: (m["mountPath"], m["constant"]))


def _describe(volume: Mapping[str, JsonValue]) -> str:
    return repr(dict(sorted(volume.items())))


def executor_config(step: Step, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the ``KubernetesExecutorConfig`` of one step (empty when it needs none).

    Raises:
        CompileError: for a malformed ``secret:`` tag.
    """
    config: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    if step.settings.annotations:
        metadata["annotations"] = dict(step.settings.annotations)
    if step.settings.labels:
        metadata["labels"] = dict(step.settings.labels)
    if metadata:
        config["podMetadata"] = metadata
    for spec in step.settings.secrets:
        field, entry = _secret(step, spec)
        config.setdefault(field, []).append(entry)
    if mounts:
        config["pvcMount"] = mounts
    return config


def platform_spec(pipeline: Pipeline, labels: Mapping[str, str]) -> dict[str, Any] | None:
    """Return the PlatformSpec document, or None when no step needs one.

    Args:
        pipeline: the pipeline.
        labels: step name -> executor label (``exec-<task>``).

    Raises:
        CompileError: for unsupported volumes or malformed secrets.
    """
    mounts = _pvc_mounts(pipeline)
    executors = {}
    for step in pipeline.steps:
        config = executor_config(step, mounts)
        if config:
            executors[labels[step.name]] = config
    if not executors:
        return None
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}
