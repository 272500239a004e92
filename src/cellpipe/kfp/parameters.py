"""Pipeline parameters in the IR: ``root.inputDefinitions.parameters`` and their types.

Owns: the mapping from the notebook's parameter types to KFP's ``parameterType`` enum and the
root input definitions with their defaults (the notebook's literals, or ``-p`` overrides).

Invariants: every parameter is optional in KFP (it has a default) and keeps its declared
type; a parameter whose default is ``None`` has no KFP type and is a `CompileError`.

Must not depend on: the runner, storage, kfp.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cellpipe.errors import CompileError
from cellpipe.pipeline.model import JsonValue, Parameter, Pipeline

PARAMETER_TYPES = {
    "int": "NUMBER_INTEGER",
    "float": "NUMBER_DOUBLE",
    "bool": "BOOLEAN",
    "str": "STRING",
    "list": "LIST",
    "dict": "STRUCT",
}
"""Notebook parameter type -> KFP ``ParameterType`` enum name."""


def parameter_type(parameter: Parameter, *, step: str | None = None) -> str:
    """Return the KFP ``parameterType`` of a notebook parameter.

    Args:
        parameter: the parameter.
        step: the step reading it, for the error message.

    Raises:
        CompileError: for a type KFP has no parameter type for (``None`` defaults).
    """
    try:
        return PARAMETER_TYPES[parameter.type]
    except KeyError:
        reader = f"step '{step}' reads parameter" if step else "parameter"
        raise CompileError(
            f"{reader} '{parameter.name}' (cell {parameter.cell}, line {parameter.line}) has "
            f"type {parameter.type}, which Kubeflow Pipelines does not support as a pipeline "
            f"parameter (supported: {', '.join(PARAMETER_TYPES)})",
            hint=f"give '{parameter.name}' a default of a supported type, e.g. \"\" or 0",
        ) from None


def root_parameters(
    pipeline: Pipeline, values: Mapping[str, JsonValue] | None = None
) -> dict[str, Any]:
    """Return ``root.inputDefinitions.parameters``: every parameter a step reads.

    Args:
        pipeline: the pipeline.
        values: defaults to use instead of the notebook's (every parameter or a subset).

    Returns:
        Parameter name -> ``{parameterType, defaultValue, isOptional}``.

    Raises:
        CompileError: for a parameter of an unsupported type read by a step.
    """
    read = {name for step in pipeline.steps for name in step.parameters}
    overrides = values or {}
    found: dict[str, Any] = {}
    for parameter in pipeline.parameters:
        if parameter.name not in read:
            continue
        reader = next(s.name for s in pipeline.steps if parameter.name in s.parameters)
        default = overrides.get(parameter.name, parameter.default)
        if parameter.type == "float" and isinstance(default, int):
            default = float(default)
        found[parameter.name] = {
            "parameterType": parameter_type(parameter, step=reader),
            "defaultValue": default,
            "isOptional": True,
        }
    return found
