"""``cellpipe compile``: write a notebook's pipeline as Kubeflow Pipelines v2 IR YAML.

Owns: the ``compile`` command's arguments, where the YAML goes and its ``--json`` summary.

Invariants: the YAML is validated before it is written (nothing is written otherwise); the
same notebook and options give byte-identical files. Exit 0 ok, 2 definition or parameter
errors, 1 compile errors.

Must not depend on: the runner, other command modules.
"""

from __future__ import annotations

import argparse
import sys

from cellpipe.cli import render
from cellpipe.cli._kfp import add_compile_options
from cellpipe.cli._loading import NOTEBOOK_HELP

DESCRIPTION = """\
Compile a notebook's pipeline to Kubeflow Pipelines v2 IR YAML.

Each step becomes a lightweight Python component that carries the step's cells, the imports
and functions cells and a small runtime: pods need only Python, the step's pinned packages and
kfp's executor, never cellpipe or Jupyter. Without --image the pods install the step's packages
(pinned to the versions installed here) when they start; with --image nothing is installed.
"""

EPILOG = """\
examples:
  cellpipe compile train.ipynb                       writes train.yaml beside the notebook
  cellpipe compile train.ipynb -o - | less           the YAML on stdout
  cellpipe compile train.ipynb --image registry/train:1 -p MAX_DEPTH=6
  cellpipe compile train.ipynb --image-from-context  after `cellpipe image train.ipynb --build`"""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add the ``compile`` command to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
        parents: parsers carrying the options every command accepts.
    """
    parser = subparsers.add_parser(
        "compile",
        parents=parents,
        help="write the pipeline as Kubeflow Pipelines v2 YAML",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebook", metavar="NOTEBOOK", help=NOTEBOOK_HELP)
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE.yaml",
        help="where to write the YAML ('-' for stdout; default: NOTEBOOK with .yaml)",
    )
    add_compile_options(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(handler=compile_cmd)


def compile_cmd(args: argparse.Namespace) -> int:
    """Run ``cellpipe compile``.

    Args:
        args: the parsed arguments.

    Returns:
        0 when the YAML was written.

    Raises:
        CellpipeError: for definition, parameter or compile errors.
    """
    from cellpipe import api

    result = api.compile(
        args.notebook,
        args.output,
        image=args.image,
        image_from_context=args.image_from_context,
        name=args.name,
        params=args.params,
        run_packages=getattr(args, "run_packages", True),
    )
    document = result.to_dict()
    if document["output"] == "-":
        sys.stdout.write(result.text)
        return 0
    for text in document["warnings"]:
        print(f"warning: {text}", file=sys.stderr)
    if args.json:
        render.write_json(document, sys.stdout)
    else:
        steps = render.plural(document["steps"], "step")
        print(f"compiled {document['pipeline']} ({steps}) to {document['output']}")
        pinned = sorted({r for reqs in document["run_packages"].values() for r in reqs})
        if pinned:
            noun = "package" if len(pinned) == 1 else "packages"
            print(
                f"also pinned {len(pinned)} {noun} the steps' last local run imported "
                f"indirectly: {', '.join(pinned)} (--no-run-packages: only the code's own)"
            )
    return 0
