"""The ``root`` section of the IR: the DAG of tasks, one per step, and its wiring.

Owns: the KFP-safe names of steps (`kfp_names`) and of the pipeline (`pipeline_name`), and
`root_dag` (each task's component, inputs, dependencies and caching options).

Invariants: a task depends on every upstream step (data edges and ``prev:`` alike), sorted;
every artifact input names its producer task and that task's output key; every parameter
input names a root input parameter. Names are ``[a-z0-9][a-z0-9-]*`` and unique; task
names have at most 63 characters, the pipeline's name at most 100.

Must not depend on: the runner, storage, kfp.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cellpipe.errors import CompileError
from cellpipe.kfp.components import StepIO
from cellpipe.pipeline.model import Pipeline

_UNSAFE = re.compile(r"[^a-z0-9]+")
# The KFP API refuses pipeline names over 100 characters ("Pipeline name too long. Support
# maximum length of 100"); task names end up in Kubernetes names and labels, whose limit is 63
# (RFC 1123 labels). `cellpipe check` already limits step names to 63.
MAX_NAME = 100
MAX_TASK_NAME = 63


def kfp_name(text: str, limit: int = MAX_NAME) -> str:
    """Return ``text`` as a KFP/Kubernetes-safe name (``Train_Forest`` -> ``train-forest``)."""
    return _UNSAFE.sub("-", text.lower()).strip("-")[:limit].rstrip("-")


def kfp_names(pipeline: Pipeline) -> dict[str, str]:
    """Return step name -> task name, unique (``-2``, ``-3``... on a clash), in step order.

    Task names are at most `MAX_TASK_NAME` characters, suffix included.
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for step in pipeline.steps:
        base = kfp_name(step.name, MAX_TASK_NAME) or "step"
        name, number = base, 2
        while name in taken:
            suffix = f"-{number}"
            name = base[: MAX_TASK_NAME - len(suffix)].rstrip("-") + suffix
            number += 1
        taken.add(name)
        names[step.name] = name
    return names


def pipeline_name(pipeline: Pipeline, name: str | None = None) -> str:
    """Return the pipeline's KFP name: ``name`` if given, else the pipeline's own name.

    Raises:
        CompileError: if nothing of the name is left once made KFP-safe.
    """
    raw = name if name is not None else pipeline.name
    safe = kfp_name(raw)
    if not safe:
        raise CompileError(
            f"the pipeline name {raw!r} has no letters or digits, so it cannot name a KFP pipeline",
            hint="pass --name with a name such as my-pipeline",
        )
    return safe


def root_dag(
    pipeline: Pipeline, io: Mapping[str, StepIO], names: Mapping[str, str]
) -> dict[str, Any]:
    """Return ``root.dag``: one task per step.

    Args:
        pipeline: the pipeline.
        io: step name -> component keys.
        names: step name -> task name.

    Returns:
        ``{"tasks": {...}}``.
    """
    tasks: dict[str, Any] = {}
    for step in pipeline.steps:
        keys = io[step.name]
        task: dict[str, Any] = {
            "componentRef": {"name": f"comp-{names[step.name]}"},
            "taskInfo": {"name": names[step.name]},
            "cachingOptions": {"enableCache": step.settings.cache is not False},
        }
        inputs: dict[str, Any] = {}
        if keys.parameters:
            inputs["parameters"] = {
                key: {"componentInputParameter": name} for key, name in keys.parameters.items()
            }
        if keys.inputs:
            inputs["artifacts"] = {
                key: {
                    "taskOutputArtifact": {
                        "producerTask": names[producer],
                        "outputArtifactKey": io[producer].output_key(variable),
                    }
                }
                for key, (variable, producer) in keys.inputs.items()
            }
        if inputs:
            task["inputs"] = inputs
        if step.upstream:
            task["dependentTasks"] = sorted(names[up] for up in step.upstream)
        tasks[names[step.name]] = task
    return {"tasks": tasks}
