"""What ``cellpipe compile``, ``submit`` and ``image`` share: notebook -> checked YAML text.

Owns: `compile_notebook` (load, resolve ``-p`` values, pick the image, compile, validate,
dump), `with_run_packages` (the packages a step's last local run imported, pinned too) and
the ``--image``/``--name``/``-p``/``--no-run-packages`` options they all accept.

Invariants: the YAML returned has passed `cellpipe.kfp.validate` (strict protobuf and
cross-reference checks); a failure there is a bug, reported as a `CompileError`.

Must not depend on: other command modules, the runner.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cellpipe.errors import CellpipeError, CompileError

if TYPE_CHECKING:
    from cellpipe.pipeline import JsonValue, Pipeline


@dataclass(frozen=True, slots=True, kw_only=True)
class Compiled:
    """A compiled notebook.

    Attributes:
        pipeline: the checked pipeline.
        documents: the PipelineSpec (and PlatformSpec) documents.
        text: their YAML.
        name: the KFP pipeline name.
        image: the image given or derived from the build context, None for the default.
        parameters: the parameter defaults compiled in.
        run_packages: step -> the requirements added from its last local run.
    """

    pipeline: Pipeline
    documents: list[dict[str, Any]]
    text: str
    run_packages: dict[str, list[str]]
    name: str
    image: str | None
    parameters: dict[str, JsonValue]


def add_compile_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--image``, ``--image-from-context``, ``--name`` and ``-p``."""
    images = parser.add_mutually_exclusive_group()
    images.add_argument(
        "--image",
        metavar="IMAGE",
        help="run every step in IMAGE, which must already have the step's packages and kfp "
        "(nothing is installed when a pod starts)",
    )
    images.add_argument(
        "--image-from-context",
        action="store_true",
        help="use the image `cellpipe image NOTEBOOK --build` builds (tag from its content)",
    )
    parser.add_argument("--name", metavar="NAME", help="the pipeline name (default: notebook's)")
    parser.add_argument(
        "-p",
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="compile with this parameter default instead of the notebook's (repeatable)",
    )
    add_run_packages_option(parser)


def add_run_packages_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-run-packages``."""
    parser.add_argument(
        "--no-run-packages",
        dest="run_packages",
        action="store_false",
        help="pin only what the code imports itself, not also what each step's last local "
        "run imported indirectly (pandas for load_wine(as_frame=True), say)",
    )


def with_run_packages(pipeline: Pipeline) -> tuple[Pipeline, dict[str, list[str]]]:
    """Add to each step the distributions its last successful local run imported.

    The code's own imports name the packages a step needs directly; what they import in turn
    (optional dependencies most of all: pandas behind ``load_wine(as_frame=True)``) only shows
    at run time. Each step process records the modules the notebook's code imported in its
    executed notebook; this reads the newest successful run's record of every step and pins
    those distributions at their installed versions, as the static ones are. Modules that no
    installed distribution provides (``cython_runtime``) are left out. No run: no change.

    Returns:
        The pipeline with the packages added, and step -> the added requirements.
    """
    import dataclasses
    import json
    from pathlib import Path

    from cellpipe.api import open_project
    from cellpipe.config import Settings
    from cellpipe.notebook.packages import resolve_modules
    from cellpipe.storage.records import StepStatus

    notebook = Path(pipeline.path).resolve()
    settings = Settings.discover(notebook.parent)
    if settings is None:
        return pipeline, {}
    wanted = {step.name for step in pipeline.steps}
    imported: dict[str, list[str]] = {}
    with open_project(settings, create=False) as project:
        for run in project.metadata.list_runs(notebook=str(notebook), limit=20):
            for record in project.metadata.step_runs(run.run_id):
                if record.step not in wanted or record.step in imported:
                    continue
                ok = record.status in (StepStatus.SUCCEEDED, StepStatus.CACHED)
                if not ok or record.notebook_digest is None:
                    continue
                try:
                    with project.artifacts.open(record.notebook_digest) as f:
                        meta = json.load(f).get("metadata", {}).get("cellpipe", {})
                except (OSError, ValueError, CellpipeError):
                    continue
                if isinstance(meta.get("imported"), list):
                    imported[record.step] = [str(m) for m in meta["imported"]]
            if len(imported) == len(wanted):
                break
    steps = []
    added: dict[str, list[str]] = {}
    for step in pipeline.steps:
        known = {p.distribution for p in step.packages} | {p.module for p in step.packages}
        extra = [
            p
            for p in resolve_modules(imported.get(step.name, ()), folder=notebook.parent)
            if p.distribution is not None and p.distribution not in known
        ]
        if extra:
            added[step.name] = sorted(r for p in extra if (r := p.requirement()) is not None)
            step = dataclasses.replace(step, packages=(*step.packages, *extra))
        steps.append(step)
    return dataclasses.replace(pipeline, steps=tuple(steps)), added


def base_image() -> str:
    """Return ``python:X.Y-slim`` for the running interpreter (pickles need the same Python)."""
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


def compile_notebook(args: argparse.Namespace) -> Compiled:
    """Compile the notebook named in ``args`` and return the checked YAML.

    Raises:
        DefinitionError: the notebook is invalid.
        ParameterError: a ``-p`` value is unknown or ill-typed.
        CompileError: the pipeline uses something the KFP target does not support.
    """
    from cellpipe import __version__
    from cellpipe.cli._loading import load_notebook
    from cellpipe.kfp.compiler import (
        compile_documents,
        installed_kfp_version,
        with_producer_packages,
    )
    from cellpipe.kfp.dag import pipeline_name
    from cellpipe.kfp.image import build_context
    from cellpipe.kfp.validate import validate_documents
    from cellpipe.kfp.yaml import dump_yaml
    from cellpipe.pipeline.parameters import parse_assignments, resolve_parameters

    pipeline = load_notebook(args.notebook)
    added: dict[str, list[str]] = {}
    if getattr(args, "run_packages", True):
        pipeline, added = with_run_packages(pipeline)
    pipeline = with_producer_packages(pipeline)
    values = resolve_parameters(pipeline, text=parse_assignments(args.params))
    kfp_version = installed_kfp_version()
    image: str | None = args.image
    if args.image_from_context:
        image = build_context(
            pipeline, kfp_version=kfp_version, base_image=base_image(), name=args.name
        ).tag
    documents = compile_documents(
        pipeline,
        image=image,
        cellpipe_version=__version__,
        kfp_version=kfp_version,
        name=args.name,
        parameters=values,
        default_image=base_image(),
    )
    problems = validate_documents(documents)
    if problems:
        raise CompileError(
            "the compiled pipeline is not valid KFP IR:\n  " + "\n  ".join(problems),
            hint="this is a bug in cellpipe's compiler; please report it with the notebook",
        )
    return Compiled(
        pipeline=pipeline,
        documents=documents,
        text=dump_yaml(documents),
        name=pipeline_name(pipeline, args.name),
        image=image,
        parameters=values,
        run_packages=added,
    )
