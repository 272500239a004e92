"""The ``deploymentSpec.executors`` section: one lightweight Python component per step.

Owns: `executor_spec` (image, command, args and resources of one step's container),
`component_module` (the Python module the component runs: the runtime, the step as data and a
typed component function) and the checks of what a pod can run (`check_step`).

The container has the shape kfp gives ``@dsl.component`` functions, which kfp.local's
``SubprocessRunner``, its ``DockerRunner`` and a cluster all run::

    sh -c "<pip install the step's pinned packages> && pip install kfp==V --no-deps && $0 $@"
    sh -ec "<write $0 to ephemeral_component.py>; python3 -m kfp.dsl.executor_main ..."
    <the component module>
    --executor_input {{$}} --function_to_execute step_<name>

Without installation (``--image``, a step's ``image:`` tag, or the notebook's image) the first
``sh -c`` part is left out: the image must already hold the packages and kfp.

Invariants: the module text is a deterministic function of the step; the runtime source is
embedded verbatim; nothing here imports kfp. Limits are validated as kfp's own
``set_cpu_limit`` / ``set_memory_limit`` do.

Must not depend on: the runner, storage, kfp.
"""

from __future__ import annotations

import json
import keyword
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

from cellpipe.errors import CompileError
from cellpipe.kfp.components import StepIO
from cellpipe.pipeline.model import CodeChunk, Pipeline, Step

EXECUTOR_MODULE = "kfp.dsl.executor_main"
SUPPORTED_LIMITS = ("cpu", "memory", "<vendor>/gpu (e.g. nvidia.com/gpu)", "<vendor>/tpu")
_CPU = re.compile(r"([0-9]*[.])?[0-9]+m?$")
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")
_ALLOWED_MAGICS = ("pip", "matplotlib", "load_ext", "config")
_MAGIC_CALL = re.compile(r"get_ipython\(\)\.(run_line_magic|run_cell_magic|system|getoutput)\(")
_NOT_INSTALLED = frozenset({"cellpipe"})  # the runtime stands in for `import cellpipe`

_PROGRAM = (
    "program_path=$(mktemp -d)\n\n"
    'printf "%s" "$0" > "$program_path/ephemeral_component.py"\n\n'
    f"_KFP_RUNTIME=true python3 -m {EXECUTOR_MODULE} "
    '--component_module_path "$program_path/ephemeral_component.py" "$@"\n'
)


@cache
def runtime_source() -> str:
    """Return the text of `cellpipe.kfp.runtime`, embedded in every component."""
    return (Path(__file__).parent / "runtime.py").read_text(encoding="utf-8")


def function_name(step: Step) -> str:
    """Return the component function's name (``--function_to_execute``)."""
    return f"step_{step.name}"


def requirements(step: Step) -> list[str]:
    """Return the step's pinned requirements (``scikit-learn==1.9.1``), sorted.

    Raises:
        CompileError: for a package that is not installed where the notebook is compiled.
    """
    found: set[str] = set()
    for package in step.packages:
        if package.distribution in _NOT_INSTALLED or package.module in _NOT_INSTALLED:
            continue
        requirement = package.requirement()
        if requirement is None:
            raise CompileError(
                f"step '{step.name}' imports '{package.module}', which is not installed here, "
                "so its version cannot be pinned for the pod",
                hint=f"install the distribution that provides '{package.module}' and compile "
                "again, or pass --image with an image that already has it",
            )
        found.add(requirement)
    return sorted(found)


def check_step(step: Step, pipeline: Pipeline) -> None:
    """Raise `CompileError` for code a pod cannot run (magics other than the harmless ones).

    Raises:
        CompileError: naming the step, the cell and the construct.
    """
    for chunk in (*pipeline.imports, *pipeline.functions, *step.code):
        _check_chunk(chunk, step)


def _check_chunk(chunk: CodeChunk, step: Step) -> None:
    if "get_ipython()" not in chunk.python or chunk.python == chunk.source:
        return
    for source_line, python_line in zip(
        chunk.source.splitlines(), chunk.python.splitlines(), strict=False
    ):
        match = _MAGIC_CALL.search(python_line)
        if match is None:
            continue
        kind = match.group(1)
        magic = re.search(r"\(\s*'([^']*)'", python_line[match.end() - 1 :])
        name = magic.group(1) if magic else ""
        if kind == "run_line_magic" and name in _ALLOWED_MAGICS:
            continue
        raise CompileError(
            f"step '{step.name}' (cell {chunk.cell}) uses {source_line.strip()!r}; IPython "
            "magics and shell commands cannot run in a Kubeflow pod (supported there: "
            + ", ".join(f"%{m}" for m in _ALLOWED_MAGICS)
            + ", which are ignored)",
            hint="move it to a cell tagged 'skip', or write it as plain Python "
            "(subprocess.run for shell commands)",
        )


def resources(step: Step) -> dict[str, Any]:
    """Return the container's ``resources`` from the step's ``limit:`` tags.

    Raises:
        CompileError: for an unknown limit key or a malformed value.
    """
    found: dict[str, Any] = {}
    for key, value in step.settings.limits.items():
        if key == "cpu":
            if not _CPU.match(value):
                raise _bad_limit(step, key, value, "a number of cores such as 2, 0.5 or 500m")
            found["resourceCpuLimit"] = value
        elif key == "memory":
            if not _MEMORY.match(value):
                raise _bad_limit(step, key, value, "a size such as 4Gi, 512Mi or 2G")
            found["resourceMemoryLimit"] = value
        elif "/" in key and key.rsplit("/", 1)[1] in {"gpu", "tpu"}:
            if not value.isdigit():
                raise _bad_limit(step, key, value, "a whole number of devices")
            if "accelerator" in found:
                raise CompileError(
                    f"step '{step.name}' asks for two kinds of accelerators; Kubeflow "
                    "Pipelines allows one per step",
                    hint="keep one limit:<vendor>/gpu tag on the step",
                )
            found["accelerator"] = {"resourceType": key, "resourceCount": value}
        else:
            raise CompileError(
                f"step '{step.name}' has limit '{key}', which the Kubeflow Pipelines target "
                f"does not support (supported: {', '.join(SUPPORTED_LIMITS)})",
                hint="remove the limit:{key}:... tag or use a supported key",
            )
    return found


def _bad_limit(step: Step, key: str, value: str, expected: str) -> CompileError:
    return CompileError(
        f"step '{step.name}' has limit:{key}:{value}, but {key} must be {expected}",
        hint=f"fix the limit:{key}:... tag",
    )


def step_document(step: Step, io: StepIO, pipeline: Pipeline, *, image: str) -> dict[str, Any]:
    """Return the data the runtime needs to run ``step`` (embedded in its module)."""
    return {
        "step": step.name,
        "notebook": Path(pipeline.path).name,
        "image": image,
        "preamble": [[c.cell, c.python] for c in (*pipeline.imports, *pipeline.functions)],
        "cells": [[c.cell, c.python] for c in step.code],
        "parameters": {
            key: [name, pipeline_type(pipeline, name)] for key, name in io.parameters.items()
        },
        "inputs": {key: variable for key, (variable, _) in io.inputs.items()},
        "outputs": dict(io.outputs),
        "metrics": sorted(m.name for m in pipeline.metrics if m.producer == step.name),
        "metrics_key": io.metrics_key,
        "report_key": io.report_key,
    }


def pipeline_type(pipeline: Pipeline, name: str) -> str:
    """Return the notebook type (``int``...) of parameter ``name``."""
    return next(p.type for p in pipeline.parameters if p.name == name)


def _annotation(kind: str) -> str:
    return {
        "int": "int",
        "float": "float",
        "bool": "bool",
        "str": "str",
        "list": "list",
        "dict": "dict",
    }[kind]


def component_module(
    step: Step, io: StepIO, pipeline: Pipeline, *, image: str, types: dict[str, str]
) -> str:
    """Return the Python module the step's component runs.

    Args:
        step: the step.
        io: its component keys.
        pipeline: the pipeline.
        image: the container image (recorded in the output artifacts' metadata).
        types: input/output key -> schema title.

    Returns:
        The module source: the runtime, the step as JSON and ``step_<name>(...)``.
    """
    document = json.dumps(step_document(step, io, pipeline, image=image), indent=1, sort_keys=True)
    arguments = [f"{key}: Input[{_class(types[key])}]" for key in io.inputs]
    arguments += [
        f"{key}: {_annotation(pipeline_type(pipeline, name))}"
        for key, name in io.parameters.items()
    ]
    arguments += [f"{key}: Output[{_class(types[key])}]" for key in io.outputs]
    arguments.append(f"{io.metrics_key}: Output[Metrics]")
    if io.report_key is not None:
        arguments.append(f"{io.report_key}: Output[HTML]")
    _check_identifiers(step, [function_name(step), *io.inputs, *io.parameters, *io.outputs])
    signature = ",\n    ".join(arguments)
    # User text (the notebook's file name, cell code, ...) only ever enters the module as a
    # repr() of a str: a file name with quotes or newlines must not become code (issue 10).
    literal = "\n".join(f"    {line!r}" for line in document.splitlines(keepends=True))
    docstring = repr(f"Run step {step.name!r} of {Path(pipeline.path).name!r}.")
    return (
        runtime_source()
        + "\n\n# -- the step (written by cellpipe's compiler) --\n\n"
        + "from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output\n\n"
        + f"_CELLPIPE_STEP = json.loads(\n{literal}\n)\n\n\n"
        + f"def {function_name(step)}(\n    {signature},\n) -> None:\n"
        + f"    {docstring}\n"
        + "    run_step(_CELLPIPE_STEP, dict(locals()))\n"
    )


def _check_identifiers(step: Step, names: list[str]) -> None:
    # Names pasted into the module as code (the function and its arguments) must be plain
    # identifiers; a notebook guarantees it, a Pipeline built by hand might not.
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
            raise CompileError(
                f"step {step.name!r}: {name!r} cannot name an argument of its Kubeflow "
                "component (it must be a Python identifier)",
                hint="rename the step or variable to lowercase letters, digits and _",
            )


def _class(schema_title: str) -> str:
    return schema_title.removeprefix("system.")


def command(step: Step, *, install: bool, kfp_version: str) -> list[str]:
    """Return the container command (the module text is appended by the caller)."""
    program = ["sh", "-ec", _PROGRAM]
    if not install:
        return program
    packages = " ".join(shlex.quote(r) for r in requirements(step))
    steps = []
    if packages:
        steps.append(
            "PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install --quiet "
            f"--no-warn-script-location {packages}"
        )
    steps.append(
        "PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install --quiet "
        f"--no-warn-script-location {shlex.quote(f'kfp=={kfp_version}')} --no-deps"
    )
    script = (
        'if ! [ -x "$(command -v pip)" ]; then\n'
        "    python3 -m ensurepip || python3 -m ensurepip --user\n"
        "fi\n\n" + " && ".join(steps) + ' && "$0" "$@"\n'
    )
    return ["sh", "-c", script, *program]


def executor_spec(
    step: Step,
    io: StepIO,
    pipeline: Pipeline,
    *,
    image: str,
    install: bool,
    kfp_version: str,
    types: dict[str, str],
) -> dict[str, Any]:
    """Return the ``deploymentSpec.executors`` entry of one step.

    Args:
        step: the step.
        io: its component keys.
        pipeline: the pipeline.
        image: the container image.
        install: True to pip install the pinned packages and kfp at start-up.
        kfp_version: the kfp version whose executor is installed (and imported) in the pod.
        types: input/output key -> schema title.

    Returns:
        ``{"container": {...}}``.

    Raises:
        CompileError: for magics, unpinnable packages or unsupported limits.
    """
    check_step(step, pipeline)
    container: dict[str, Any] = {
        "image": image,
        "command": [
            *command(step, install=install, kfp_version=kfp_version),
            component_module(step, io, pipeline, image=image, types=types),
        ],
        "args": ["--executor_input", "{{$}}", "--function_to_execute", function_name(step)],
    }
    limits = resources(step)
    if limits:
        container["resources"] = limits
    return {"container": container}
