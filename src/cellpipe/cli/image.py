"""``cellpipe image``: write (and optionally build) a pipeline's or a model's container image.

With ``--model REF``: the image that serves one model version (`cellpipe.api.model_image`).

Owns: the ``image`` command's arguments and its report.

Invariants: the context's tag is derived from its files, so ``compile --image-from-context``
and ``serve --manifest`` name the same image without building anything; ``--build`` fails
with a clear error when no build tool is installed; exactly one of NOTEBOOK and ``--model``.

Must not depend on: the runner, other command modules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellpipe.cli import render
from cellpipe.cli._kfp import add_run_packages_option, base_image, with_run_packages
from cellpipe.cli._loading import NOTEBOOK_HELP, PROJECT_HELP, load_notebook

DESCRIPTION = """\
Write a container build context (Dockerfile + pinned requirements.txt) for the pipeline's
steps. The image's tag is cellpipe-<pipeline>:<digest of the files>, so it changes exactly
when the packages change. With --build, docker, podman or buildah builds it.

With --model REF instead of a notebook: the context of an image serving that model version
with `cellpipe serve` on port 8080 (what `cellpipe serve REF --manifest` runs on KServe when no
KServe runtime loads the model): the version's packages pinned, and project/ holding a
registry with just that version, under the same number.
"""

EPILOG = """\
examples:
  cellpipe image train.ipynb -o build/ --build
  docker push cellpipe-train:3f2a9c1b4d5e   (after retagging for your registry)
  cellpipe compile train.ipynb --image-from-context
  cellpipe image --model wine@production -o build/wine --build"""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add the ``image`` command to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
        parents: parsers carrying the options every command accepts.
    """
    parser = subparsers.add_parser(
        "image",
        parents=parents,
        help="write a Dockerfile with the steps' pinned packages (and build it)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebook", metavar="NOTEBOOK", nargs="?", help=NOTEBOOK_HELP)
    parser.add_argument(
        "--model",
        metavar="REF",
        help="instead of a notebook: the image serving this model version (NAME, NAME:N, "
        "NAME@ALIAS)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="the context folder (default: NOTEBOOK-image/, or NAME-N-image/ with --model)",
    )
    parser.add_argument("--project", help=f"with --model: {PROJECT_HELP}")
    parser.add_argument("--name", metavar="NAME", help="the pipeline name used in the tag")
    parser.add_argument("--build", action="store_true", help="build it with docker/podman/buildah")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_run_packages_option(parser)
    parser.set_defaults(handler=image_cmd)


def image_cmd(args: argparse.Namespace) -> int:
    """Run ``cellpipe image``.

    Returns:
        0 when the context was written (and built).

    Raises:
        CellpipeError: for definition errors, unpinnable packages or a failed build.
    """
    from cellpipe.errors import CellpipeError

    if (args.model is None) == (args.notebook is None):
        raise CellpipeError(
            "cellpipe image takes a NOTEBOOK or --model REF (one of them)",
            hint="cellpipe image train.ipynb, or cellpipe image --model wine@production",
        )
    if args.model is not None:
        return _model_image(args)
    from cellpipe.kfp.compiler import installed_kfp_version
    from cellpipe.kfp.image import build_context, build_image, write_context

    pipeline = load_notebook(args.notebook)
    if args.run_packages:  # as `compile` does, so --image-from-context names this image
        pipeline, _ = with_run_packages(pipeline)
    context = build_context(
        pipeline, kfp_version=installed_kfp_version(), base_image=base_image(), name=args.name
    )
    notebook = Path(args.notebook)
    directory = Path(args.output) if args.output else notebook.with_name(f"{notebook.stem}-image")
    files = write_context(context, directory)
    command = build_image(context, directory) if args.build else None
    if args.json:
        render.write_json(
            {
                "ok": True,
                "tag": context.tag,
                "directory": str(directory),
                "files": [str(f) for f in files],
                "requirements": list(context.requirements),
                "built": command is not None,
                "command": command,
            },
            sys.stdout,
        )
    else:
        print(f"wrote {directory} for image {context.tag}")
        if command is None:
            print(f"build it with: docker build -t {context.tag} {directory}")
    return 0


def _model_image(args: argparse.Namespace) -> int:
    from cellpipe import api

    image = api.model_image(args.model, args.output, project=args.project, build=args.build)
    if args.json:
        render.write_json(image.to_dict(), sys.stdout)
    else:
        print(f"wrote {image.directory} for image {image.tag} serving {image.version.ref}")
        if image.command is None:
            print(f"build it with: docker build -t {image.tag} {image.directory}")
    return 0
