"""The KFP compiler's facade: `compile_pipeline` and `compile_documents`.

Owns: putting the IR sections together (``pipelineInfo``, ``components``,
``deploymentSpec``, ``root``, ``schemaVersion``, ``sdkVersion``) and choosing each step's
image and whether its packages are installed at start-up.

Image of a step, first found: its ``image:`` tag, ``image`` (``--image``), the notebook's
``docker_image``, else ``default_image``. Only the default image installs the step's pinned
packages and kfp when the pod starts; any image named by the user must already have them
(`cellpipe image` writes a build context for such an image).

Invariants: pure (no I/O, no clock, no environment); volatile values (cellpipe and kfp
versions, images) are arguments, so the same inputs give equal documents and golden files need
no special comparison. kfp itself is not imported: the documents are plain dicts, checked
against kfp's protobuf schema by `cellpipe.kfp.validate`.

Must not depend on: the runner, storage, kfp.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cellpipe.kfp.components import (
    METRICS,
    all_artifact_types,
    component_spec,
    plan_io,
)
from cellpipe.kfp.dag import kfp_names, pipeline_name, root_dag
from cellpipe.kfp.executors import executor_spec
from cellpipe.kfp.parameters import root_parameters
from cellpipe.kfp.platform import platform_spec
from cellpipe.pipeline.model import JsonValue, Pipeline

SCHEMA_VERSION = "2.1.0"
DEFAULT_IMAGE = "python:3.11-slim"


def compile_pipeline(
    pipeline: Pipeline,
    *,
    image: str | None,
    cellpipe_version: str,
    kfp_version: str,
    name: str | None = None,
    parameters: Mapping[str, JsonValue] | None = None,
    default_image: str = DEFAULT_IMAGE,
) -> dict[str, Any]:
    """Compile ``pipeline`` to a KFP v2 PipelineSpec (plain dicts, ready for `dump_yaml`).

    Args:
        pipeline: the validated pipeline.
        image: the image every step runs in (``--image``); None for the default image with
            the step's pinned packages installed at start-up.
        cellpipe_version: recorded as ``sdkVersion``.
        kfp_version: the kfp whose executor the pods install (and import).
        name: the pipeline's name; the pipeline's own name when None. Made KFP-safe.
        parameters: parameter defaults replacing the notebook's (``-p``), already typed.
        default_image: the image used when no image is named anywhere.

    Returns:
        The PipelineSpec document.

    Raises:
        CompileError: naming the step and what is not supported.

    Example::

        spec = compile_pipeline(load_pipeline("wine.ipynb"), image=None,
                                cellpipe_version="0.1.0", kfp_version="2.17.3")
        text = dump_yaml(spec)
    """
    io = plan_io(pipeline)
    names = kfp_names(pipeline)
    types = all_artifact_types(pipeline.steps)
    components: dict[str, Any] = {}
    executors: dict[str, Any] = {}
    for step in pipeline.steps:
        label = f"exec-{names[step.name]}"
        keys = io[step.name]
        step_image, install = _image(pipeline, step.settings.image, image, default_image)
        key_types = {key: types[producer][var] for key, (var, producer) in keys.inputs.items()}
        key_types.update({key: types[step.name][var] for key, var in keys.outputs.items()})
        key_types[keys.metrics_key] = METRICS
        components[f"comp-{names[step.name]}"] = component_spec(
            step, keys, pipeline=pipeline, types=types, executor_label=label
        )
        executors[label] = executor_spec(
            step,
            keys,
            pipeline,
            image=step_image,
            install=install,
            kfp_version=kfp_version,
            types=key_types,
        )
    info: dict[str, Any] = {"name": pipeline_name(pipeline, name)}
    if pipeline.settings.description:
        info["description"] = pipeline.settings.description
    root: dict[str, Any] = {"dag": root_dag(pipeline, io, names)}
    inputs = root_parameters(pipeline, parameters)
    if inputs:
        root["inputDefinitions"] = {"parameters": inputs}
    return {
        "pipelineInfo": info,
        "components": components,
        "deploymentSpec": {"executors": executors},
        "root": root,
        "schemaVersion": SCHEMA_VERSION,
        "sdkVersion": f"cellpipe-{cellpipe_version}",
    }


def with_producer_packages(pipeline: Pipeline) -> Pipeline:
    """Give each step the packages of the steps whose outputs it reads.

    A value crosses pods as a file: a numpy array made by one step needs numpy where it is
    loaded, even when the reading step never imports numpy itself. Without a local run to
    tell what each step really imported, the producers' packages are the safe answer.

    Returns:
        The pipeline with each step's packages extended (distribution names kept unique).
    """
    by_name = {step.name: step for step in pipeline.steps}
    steps = []
    for step in pipeline.steps:
        known = {(p.distribution or p.module) for p in step.packages}
        extra = []
        for producer in sorted({ref.producer for ref in step.inputs}):
            for package in by_name[producer].packages:
                key = package.distribution or package.module
                if key not in known:
                    known.add(key)
                    extra.append(package)
        steps.append(
            dataclasses.replace(step, packages=(*step.packages, *extra)) if extra else step
        )
    return dataclasses.replace(pipeline, steps=tuple(steps))


def compile_platform(pipeline: Pipeline) -> dict[str, Any] | None:
    """Return the kfp-kubernetes PlatformSpec document, or None when no step needs one.

    Raises:
        CompileError: for unsupported volumes or malformed ``secret:`` tags.
    """
    names = kfp_names(pipeline)
    return platform_spec(pipeline, {s: f"exec-{n}" for s, n in names.items()})


def compile_documents(pipeline: Pipeline, **options: Any) -> list[dict[str, Any]]:
    """Return the documents of a compiled pipeline: PipelineSpec, then PlatformSpec if any.

    ``options`` are those of `compile_pipeline`.

    Raises:
        CompileError: naming the step and what is not supported.
    """
    documents = [compile_pipeline(pipeline, **options)]
    platform = compile_platform(pipeline)
    if platform is not None:
        documents.append(platform)
    return documents


def _image(
    pipeline: Pipeline, step_image: str | None, image: str | None, default_image: str
) -> tuple[str, bool]:
    chosen = step_image or image or pipeline.settings.image
    if chosen:
        return chosen, False
    return default_image, True


def installed_kfp_version() -> str:
    """Return the version of the installed kfp (the executor pods install), read once.

    Raises:
        CompileError: when kfp is not installed (the ``kfp`` extra).
    """
    from importlib import metadata

    from cellpipe.errors import CompileError

    try:
        return metadata.version("kfp")
    except metadata.PackageNotFoundError:
        raise CompileError(
            "compiling for Kubeflow Pipelines needs the kfp package, which is not installed",
            hint="pip install 'cellpipe[kfp]'",
        ) from None
