"""Checking compiled documents: strict protobuf parsing plus cross-reference checks.

Owns: `validate_documents`, which returns every problem found in a PipelineSpec (and its
PlatformSpec): fields kfp's ``pipeline_spec_pb2`` does not know (unknown fields fail, unlike
kfp's loader), executors that are not valid ``ExecutorSpec`` messages, PlatformSpec executors
that are not valid ``KubernetesExecutorConfig`` messages, and references that do not resolve:
components, executors, producer tasks, output keys, root parameters, dependencies, and
required inputs that are not wired (or wired but not declared).

Invariants: never raises for a bad document (problems are returned as text); imports kfp
and kfp-kubernetes lazily, so it needs the ``kfp`` extra only when called.

Must not depend on: the runner, storage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _parse(value: Any, message: Any, where: str, problems: list[str]) -> None:
    from google.protobuf import json_format

    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        problems.append(f"{where}: {exc}")


def validate_documents(documents: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return every problem of a compiled pipeline (empty when it is valid).

    Args:
        documents: the PipelineSpec, optionally followed by a PlatformSpec.

    Returns:
        One line per problem.
    """
    from kfp.pipeline_spec import pipeline_spec_pb2

    problems: list[str] = []
    if not documents:
        return ["no document"]
    spec = documents[0]
    _parse(spec, pipeline_spec_pb2.PipelineSpec(), "PipelineSpec", problems)
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    for label, executor in sorted(executors.items()):
        message = pipeline_spec_pb2.PipelineDeploymentConfig.ExecutorSpec()
        _parse(executor, message, f"executor {label}", problems)
    problems.extend(cross_reference_problems(spec))
    for index, extra in enumerate(documents[1:], start=2):
        problems.extend(_platform_problems(extra, executors, index))
    return problems


def _platform_problems(
    doc: Mapping[str, Any], executors: Mapping[str, Any], index: int
) -> list[str]:
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    problems: list[str] = []
    _parse(doc, pipeline_spec_pb2.PlatformSpec(), f"document {index} (PlatformSpec)", problems)
    platforms = doc.get("platforms", {})
    for platform, single in sorted(platforms.items()):
        if platform != "kubernetes":
            problems.append(f"PlatformSpec: unknown platform {platform!r}")
            continue
        configs = single.get("deploymentSpec", {}).get("executors", {})
        for label, config in sorted(configs.items()):
            if label not in executors:
                problems.append(f"PlatformSpec executor {label!r} is not in deploymentSpec")
            message = kubernetes_executor_config_pb2.KubernetesExecutorConfig()
            _parse(config, message, f"PlatformSpec executor {label}", problems)
    return problems


def cross_reference_problems(spec: Mapping[str, Any]) -> list[str]:
    """Return the references of a PipelineSpec that do not resolve (kfp does not check them).

    Args:
        spec: the PipelineSpec as plain dicts.

    Returns:
        One line per problem.
    """
    problems: list[str] = []
    components = spec.get("components", {})
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    root = spec.get("root", {})
    root_params = root.get("inputDefinitions", {}).get("parameters", {})
    tasks = root.get("dag", {}).get("tasks", {})
    for name, component in sorted(components.items()):
        label = component.get("executorLabel")
        if label not in executors:
            problems.append(f"component {name}: executor {label!r} does not exist")
    for name, task in sorted(tasks.items()):
        where = f"task {name}"
        ref = task.get("componentRef", {}).get("name")
        component = components.get(ref)
        if component is None:
            problems.append(f"{where}: component {ref!r} does not exist")
            continue
        depends = set(task.get("dependentTasks", []))
        for dep in sorted(depends - tasks.keys()):
            problems.append(f"{where}: depends on unknown task {dep!r}")
        declared = component.get("inputDefinitions", {})
        wired = task.get("inputs", {})
        for key, param in sorted(wired.get("parameters", {}).items()):
            if key not in declared.get("parameters", {}):
                problems.append(f"{where}: parameter {key!r} is not an input of {ref}")
            source = param.get("componentInputParameter")
            if source is not None and source not in root_params:
                problems.append(f"{where}: parameter {key!r} reads unknown root input {source!r}")
        for key, artifact in sorted(wired.get("artifacts", {}).items()):
            if key not in declared.get("artifacts", {}):
                problems.append(f"{where}: artifact {key!r} is not an input of {ref}")
            problems.extend(_producer_problems(where, key, artifact, tasks, components, depends))
        for kind in ("parameters", "artifacts"):
            for key, definition in sorted(declared.get(kind, {}).items()):
                if key not in wired.get(kind, {}) and not definition.get("isOptional"):
                    problems.append(f"{where}: required input {key!r} is not wired")
    return problems


def _producer_problems(
    where: str,
    key: str,
    artifact: Mapping[str, Any],
    tasks: Mapping[str, Any],
    components: Mapping[str, Any],
    depends: set[str],
) -> list[str]:
    output = artifact.get("taskOutputArtifact")
    if output is None:
        return []
    producer = output.get("producerTask")
    output_key = output.get("outputArtifactKey")
    if producer not in tasks:
        return [f"{where}: artifact {key!r} comes from unknown task {producer!r}"]
    problems = []
    if producer not in depends:
        problems.append(f"{where}: reads {producer}.{output_key} but does not depend on it")
    produced = components.get(tasks[producer].get("componentRef", {}).get("name"), {})
    outputs = produced.get("outputDefinitions", {}).get("artifacts", {})
    if output_key not in outputs:
        problems.append(f"{where}: task {producer!r} has no output artifact {output_key!r}")
    return problems
