"""The run-history commands: ``cellpipe runs``, ``cellpipe show RUN`` and ``cellpipe why``.

Owns: listing runs, showing one run (parameters, metrics, every step with its cache decision,
outputs, log and executed notebook), and explaining a step's cache hit or miss.

Invariants: read-only; thin shells over `cellpipe.api.runs`, `show` and `why` (the same
functions a notebook calls), whose results carry the documents (`cellpipe.views.runs`);
``--json`` prints exactly one JSON document. The project is found like git finds ``.git``: the
nearest folder at or above the working directory (or ``--project``) with a ``.cellpipe``
folder.

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import sys

from cellpipe.cli import render
from cellpipe.cli._loading import PROJECT_HELP, RUN_HELP


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add ``runs``, ``show`` and ``why`` to the CLI."""
    runs = subparsers.add_parser(
        "runs",
        parents=parents,
        help="list the runs recorded in this project, newest first",
        description="List the runs recorded in this project's .cellpipe folder, newest first.",
        epilog="examples:\n  cellpipe runs\n  cellpipe runs --status failed --limit 5 --json"
        "\n  cellpipe runs --param MAX_DEPTH=6 --metric 'forest_acc>=0.9'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    runs.add_argument("--notebook", help="only runs of this notebook")
    runs.add_argument(
        "--status",
        choices=["running", "succeeded", "failed", "cancelled", "interrupted"],
        help="only runs that ended so",
    )
    runs.add_argument("-n", "--limit", type=int, default=20, help="at most N runs (default 20)")
    runs.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="only runs with this parameter value (repeatable)",
    )
    runs.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME<OP>NUMBER",
        help="only runs whose metric compares so, e.g. 'acc>0.9' (> >= < <= == !=; repeatable)",
    )
    runs.add_argument("--project", default=".", help=PROJECT_HELP)
    runs.add_argument("--json", action="store_true", help="print one JSON document")
    runs.set_defaults(handler=runs_cmd)

    show = subparsers.add_parser(
        "show",
        parents=parents,
        help="show one run: parameters, metrics, steps, outputs, logs",
        description="Show one run: its parameters and metrics, and for every step its status, "
        "cache decision, outputs (digest, serializer, size), log and executed notebook.",
        epilog="examples:\n  cellpipe show wine-20261128-101500-ab12\n  cellpipe show wine-2026 "
        "--json     (any unique prefix of a run id)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("run", metavar="RUN", help=RUN_HELP)
    show.add_argument("--project", default=".", help=PROJECT_HELP)
    show.add_argument("--json", action="store_true", help="print one JSON document")
    show.set_defaults(handler=show_cmd)

    why = subparsers.add_parser(
        "why",
        parents=parents,
        help="explain why a step of a run was a cache hit or a miss",
        description="Explain a step's cache decision in a run: a hit names the run whose "
        "outputs were reused; a miss names what changed (a cell's code, a parameter with its "
        "old and new value, an input, a file the step read).",
        epilog="examples:\n  cellpipe why wine-20261128 train_forest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    why.add_argument("run", metavar="RUN", help=RUN_HELP)
    why.add_argument("step", metavar="STEP", help="the step's name")
    why.add_argument("--project", default=".", help=PROJECT_HELP)
    why.add_argument("--json", action="store_true", help="print one JSON document")
    why.set_defaults(handler=why_cmd)


def runs_cmd(args: argparse.Namespace) -> int:
    """List runs."""
    from cellpipe import api

    result = api.runs(
        args.project,
        args.notebook,
        status=args.status,
        limit=args.limit,
        params=args.param,
        metrics=args.metric,
    )
    if args.json:
        render.write_json(result.to_dict(), sys.stdout)
        return 0
    # One column per parameter (of any run listed, in the order they first appear); a run
    # without that parameter shows "-".
    columns, rows = result.rows()
    render.Output(sys.stdout).table(columns, rows)
    return 0


def show_cmd(args: argparse.Namespace) -> int:
    """Show one run."""
    from cellpipe import api

    result = api.show(args.run, project=args.project)
    document = result.to_dict()
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    out.line(f"run {document['run_id']}: {document['status']}")
    out.line(f"notebook {document['notebook']}")
    if document["error"]:
        out.line(f"error: {document['error'].splitlines()[0]}")
    out.heading("Parameters")
    out.table(["name", "value"], [[k, _short(v)] for k, v in document["parameters"].items()])
    out.heading("Metrics")
    out.table(["name", "value"], [[k, _short(v)] for k, v in document["metrics"].items()])
    out.heading("Steps")
    out.table(["step", "status", "took", "cache decision"], result.step_rows())
    out.heading("Outputs")
    out.table(
        ["step", "variable", "format", "size", "digest", "read downstream"], result.output_rows()
    )
    shown = result.displayed_rows()
    if shown:
        out.heading("Displayed and written")
        out.table(["step", "displayed", "files written"], shown)
    changes = document["file_changes"]
    if changes:
        out.heading("Files changed (shared: other steps ran at the same time, one of them did it)")
        out.table(
            ["step", "file", "change", "by", "attribution"],
            [[c["step"], c["file"], c["change"], ", ".join(c["by"]), c["attribution"]]
             for c in changes],
        )  # fmt: skip
    if document["executed_notebook"]:
        out.line()
        out.line(f"executed notebook: {document['executed_notebook']}")
    link = api.ui_url(f"/runs/{document['run_id']}", project=args.project)
    if link:  # a `cellpipe ui` of this project is running
        out.line(f"in the web UI: {link}")
    return 0


def why_cmd(args: argparse.Namespace) -> int:
    """Explain a step's cache decision."""
    from cellpipe import api

    result = api.why(args.run, args.step, project=args.project)
    if args.json:
        render.write_json(result.to_dict(), sys.stdout)
        return 0
    render.Output(sys.stdout).line(result.text())
    return 0


def _short(value: object, width: int = render.VALUE_WIDTH) -> str:
    return render.short_value(value, width=width)
