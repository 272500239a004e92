"""The ``cellpipe`` command: argument parsing, dispatch to a command, and error handling.

Owns: the top-level parser, the global options (``--debug``, ``--version``), the list of
command modules, logging set-up and how every error becomes an exit status.

Adding a command: write ``cellpipe/cli/<name>.py`` exposing
``register(subparsers, parents)``, which adds a subparser (``parents=parents`` gives it the
global options, a description and an ``examples:`` epilog) and sets
``handler=<function(args) -> int>`` with ``set_defaults``; then add the module to `COMMANDS`.
Handlers return the exit status and raise `CellpipeError` for anything the user can fix; they
never call ``sys.exit``.

Invariants: start-up stays fast (``cellpipe check`` on a 500-cell notebook in under a second,
interpreter included): command modules import only argparse-level things at the top and load
the notebook reader, rich, and the rest inside their handler. ``main`` never raises: it
returns the exit status (0 ok, 2 definition or usage error, 1 anything else, 130 interrupted).

Must not depend on: ui. Nothing in cellpipe imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from cellpipe import __version__
from cellpipe.cli import render
from cellpipe.errors import CellpipeError

COMMANDS = (
    "cellpipe.cli.check",
    "cellpipe.cli.graph",
    "cellpipe.cli.run",
    "cellpipe.cli.runs",
    "cellpipe.cli.lineage",
    "cellpipe.cli.snapshot",
    "cellpipe.cli.compile",
    "cellpipe.cli.image",
    "cellpipe.cli.submit",
)

BUG_REPORT = (
    f"this is a bug in cellpipe {__version__}, please report it with the traceback above "
    "and the command you ran"
)

DESCRIPTION = """\
cellpipe turns a Kale-tagged Jupyter notebook into a checked, cached, reproducible pipeline.
"""

EPILOG = """\
examples:
  cellpipe check train.ipynb               steps, data edges, parameters, metrics, packages
  cellpipe check train.ipynb --json        the same as one JSON document
  cellpipe graph train.ipynb               the pipeline as a Mermaid diagram
  cellpipe run train.ipynb -p LR=0.01      run locally; cached steps are reused
  cellpipe runs                            the run history of this project
  cellpipe why RUN STEP                    why a step was a cache hit or a miss
  cellpipe compare RUN RUN                 parameters and metrics side by side
  cellpipe compile train.ipynb             Kubeflow Pipelines v2 YAML for a cluster

Run `cellpipe COMMAND --help` for a command's options."""

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Return the ``cellpipe`` argument parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="cellpipe",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cellpipe {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and debug logging for any error"
    )
    # Also accepted after the command (`cellpipe check nb.ipynb --debug`); SUPPRESS keeps a
    # subcommand's default from overwriting a --debug given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and debug logging for any error",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cellpipe`` command line.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0 ok, 2 definition or usage error, 1 other errors and bugs.

    Example::

        >>> main(["check", "examples/diamond/diamond.ipynb", "--json"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors end in argparse
        return _status(exc.code)
    debug: bool = getattr(args, "debug", False)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(debug)
    return _call(handler, args, debug=debug)


def _call(handler: Handler, args: argparse.Namespace, *, debug: bool) -> int:
    import traceback

    try:
        return handler(args)
    except CellpipeError as error:
        if debug:
            traceback.print_exc()
        _flush_stdout()
        print(render.format_error(error), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cellpipe check nb | head`); that is not an error of ours.
        _silence_stdout()
        return 0
    except Exception:
        traceback.print_exc()
        print(f"\n{BUG_REPORT}", file=sys.stderr)
        return 1


def _status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _flush_stdout() -> None:
    # The report printed so far should appear before the error, not after it.
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _silence_stdout()


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        return


if __name__ == "__main__":
    sys.exit(main())
