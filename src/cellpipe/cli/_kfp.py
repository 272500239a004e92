"""What ``cellpipe compile``, ``submit`` and ``image`` share: notebook -> checked YAML text.

Owns: the ``--image``/``--name``/``-p``/``--no-run-packages`` options they all accept and
`compile_notebook`, which hands them to `cellpipe.api.compile_pipeline` (load, resolve ``-p``
values, pick the image, compile, validate, dump; `with_run_packages` pins the packages a
step's last local run imported too).

Invariants: the YAML returned has passed `cellpipe.kfp.validate` (strict protobuf and
cross-reference checks); a failure there is a bug, reported as a `CompileError`.

Must not depend on: other command modules, the runner.
"""

from __future__ import annotations

import argparse

from cellpipe.api import Compiled, base_image, compile_pipeline, with_run_packages

__all__ = [
    "Compiled",
    "add_compile_options",
    "add_run_packages_option",
    "base_image",
    "compile_notebook",
    "with_run_packages",
]


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


def compile_notebook(args: argparse.Namespace) -> Compiled:
    """Compile the notebook named in ``args`` and return the checked YAML.

    Raises:
        DefinitionError: the notebook is invalid.
        ParameterError: a ``-p`` value is unknown or ill-typed.
        CompileError: the pipeline uses something the KFP target does not support.
    """
    return compile_pipeline(
        args.notebook,
        image=args.image,
        image_from_context=args.image_from_context,
        name=args.name,
        params=args.params,
        run_packages=getattr(args, "run_packages", True),
    )
