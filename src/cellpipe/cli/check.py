"""``cellpipe check``: read a notebook, validate its pipeline and show what was found.

Owns: the ``check`` command's arguments and its human report. The check is
`cellpipe.api.check` (what ``cellpipe.check`` in a notebook calls); its ``--json`` documents
are `cellpipe.views.check`.

Invariants: with ``--json`` exactly one JSON document goes to stdout, on success and on a
definition error alike (``ok`` says which); without it, definition errors go to stderr, every
one with its cell, line and hint. Exit 0 when valid, 2 for definition errors. Nothing runs.

Must not depend on: the runner, storage (the secret files come through `cellpipe.api`) or
other command modules.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cellpipe.cli import render
from cellpipe.cli._loading import NOTEBOOK_HELP
from cellpipe.errors import CellpipeError, PipelineValidationError
from cellpipe.views.check import failure_document, success_document

__all__ = ["failure_document", "register", "run", "show_report", "success_document"]

if TYPE_CHECKING:
    from cellpipe.pipeline import JsonValue, Pipeline

DESCRIPTION = """\
Read a Kale-tagged notebook and check the pipeline it defines, without running anything.

Shows the steps in run order with the variables each one reads (and from which step), the
variables it hands on, the parameters it reads; the data edges between steps; the pipeline
parameters with their types and defaults; the metrics and the step that produces each; the
packages the steps need; and any warnings.

If the notebook has definition errors (a name no step produces, two steps that may both change
a variable, a bad parameter line, an unknown tag...), every one is listed with its cell, line
and a hint, and the exit status is 2.
"""

EPILOG = """\
examples:
  cellpipe check train.ipynb
  cellpipe check pipeline.py --json | jq '.edges'"""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add the ``check`` command to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
        parents: parsers carrying the options every command accepts.
    """
    parser = subparsers.add_parser(
        "check",
        parents=parents,
        help="validate a notebook's pipeline and show its steps, edges, parameters and metrics",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebook", metavar="NOTEBOOK", help=NOTEBOOK_HELP)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (the pipeline plus ok/errors) instead of the report",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``cellpipe check``.

    Args:
        args: the parsed arguments (``notebook``, ``json``).

    Returns:
        The exit status: 0 when the pipeline is valid, 2 for definition errors.

    Raises:
        CellpipeError: without ``--json``, an error reading the notebook.
    """
    from cellpipe.api import check

    notebook: str = args.notebook
    result = check(notebook)
    if args.json:
        if result.error is not None and getattr(args, "debug", False):
            import traceback

            traceback.print_exception(result.error)
        render.write_json(result.to_dict(), sys.stdout)
        return 0 if result.ok else _exit_code(result.error)
    if result.ok and result.pipeline is not None:
        out = render.Output(sys.stdout)
        show_report(result.pipeline, out)
        render.secrets_left_out(result["secrets_left_out"], out)
        return 0
    error = result.error
    if not isinstance(error, PipelineValidationError):
        raise error if error is not None else CellpipeError("the check failed")
    print(render.format_error(error), file=sys.stderr)
    if result.warnings:
        print(f"\nand {_count(len(result.warnings), 'warning')}:", file=sys.stderr)
        for warning in result.warnings:
            print(render.format_problem(warning, path=notebook), file=sys.stderr)
    return error.exit_code


def _exit_code(error: CellpipeError | None) -> int:
    return error.exit_code if error is not None else 2


def show_report(pipeline: Pipeline, out: render.Output) -> None:
    """Write the human-readable report of a valid pipeline.

    Args:
        pipeline: the checked pipeline.
        out: where to write.
    """
    distributions = {p.distribution or p.module for s in pipeline.steps for p in s.packages}
    out.line(f"pipeline {pipeline.name}  ({pipeline.path})", style="bold")
    out.line(
        f"{_count(len(pipeline.steps), 'step')}, {_count(len(pipeline.edges), 'edge')}, "
        f"{_count(len(pipeline.parameters), 'parameter')}, "
        f"{_count(len(pipeline.metrics), 'metric')}, "
        f"{_count(len(distributions), 'package')}, "
        f"{_count(len(pipeline.warnings), 'warning')}"
    )

    out.heading("Steps (in run order)")
    out.table(
        ["step", "cells", "upstream", "inputs (from step)", "outputs", "parameters"],
        [
            [
                step.name,
                render.cell_ranges(step.cells),
                render.join(step.upstream),
                render.join(f"{ref.name} ({ref.producer})" for ref in step.inputs),
                render.join(step.outputs),
                render.join(step.parameters),
            ]
            for step in pipeline.steps
        ],
    )

    out.heading("Edges")
    with_files = any(edge.files for edge in pipeline.edges)
    out.table(
        ["from", "to", "variables", *(["files"] if with_files else [])],
        [
            [
                edge.source,
                edge.target,
                render.join(edge.variables) if edge.variables or edge.files else "(order)",
                *([render.join(edge.files)] if with_files else []),
            ]
            for edge in pipeline.edges
        ],
    )

    out.heading("Parameters")
    out.table(
        ["name", "type", "default", "cell"],
        [[p.name, p.type, _literal(p.default), f"{p.cell}:{p.line}"] for p in pipeline.parameters],
    )

    out.heading("Metrics")
    out.table(
        ["name", "step", "cell"],
        [[m.name, m.producer, f"{m.cell}:{m.line}"] for m in pipeline.metrics],
    )

    out.heading("Packages")
    out.table(["package", "version", "module", "steps"], _package_rows(pipeline))

    if pipeline.warnings:
        out.heading("Warnings")
        for warning in pipeline.warnings:
            for text in render.format_problem(warning, path=pipeline.path).splitlines():
                out.line(f"  {text}", style="yellow")


def _package_rows(pipeline: Pipeline) -> list[list[str]]:
    users: dict[tuple[str, str, str], list[str]] = {}
    for step in pipeline.steps:
        for package in step.packages:
            key = (
                package.distribution or "(not installed)",
                package.version or "-",
                package.module,
            )
            users.setdefault(key, []).append(step.name)
    every = len(pipeline.steps)
    return [
        [dist, version, module, "all" if len(steps) == every else render.join(steps)]
        for (dist, version, module), steps in sorted(users.items())
    ]


def _literal(value: JsonValue) -> str:
    return render.dumps(value, ensure_ascii=False)


_count = render.plural
