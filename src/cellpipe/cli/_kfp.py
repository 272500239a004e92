"""What ``cellpipe compile``, ``submit`` and ``image`` share: notebook -> checked YAML text.

Owns: `compile_notebook` (load, resolve ``-p`` values, pick the image, compile, validate,
dump) and the ``--image``/``--name``/``-p`` options they all accept.

Invariants: the YAML returned has passed `cellpipe.kfp.validate` (strict protobuf and
cross-reference checks); a failure there is a bug, reported as a `CompileError`.

Must not depend on: other command modules, the runner.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cellpipe.errors import CompileError

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
    """

    pipeline: Pipeline
    documents: list[dict[str, Any]]
    text: str
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
    from cellpipe.kfp.compiler import compile_documents, installed_kfp_version
    from cellpipe.kfp.dag import pipeline_name
    from cellpipe.kfp.image import build_context
    from cellpipe.kfp.validate import validate_documents
    from cellpipe.kfp.yaml import dump_yaml
    from cellpipe.pipeline.parameters import parse_assignments, resolve_parameters

    pipeline = load_notebook(args.notebook)
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
    )
