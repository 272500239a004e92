"""Run history commands: ``compare``, ``logs``, ``lineage`` and ``artifacts get``.

Owns: comparing runs' parameters and metrics side by side, printing a step's captured output,
the lineage graph of a run or an artifact as text, Mermaid, Graphviz dot or JSON, and copying
a stored value out of the artifact store.

``artifacts get`` writes the stored bytes unchanged: they already are the value in its natural
format (``.npy`` for numpy arrays, ``.parquet`` for data frames, ``.json``, ``.joblib`` for
scikit-learn objects, ``.pkl`` for cloudpickle), so no value is loaded or re-encoded and the
digest of the file written is the artifact's digest. ``cellpipe.load(run, step, var)``
returns the value itself.

Invariants: read-only on the stores; thin shells over `cellpipe.api.compare`, `logs`,
`lineage` and `artifact_copy`; the renderers are `cellpipe.views.lineage`; ``--json`` prints
exactly one JSON document; the project is found like git finds ``.git``.

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellpipe.cli import render
from cellpipe.cli._loading import PROJECT_HELP, RUN_HELP
from cellpipe.errors import CellpipeError

_RAW = argparse.RawDescriptionHelpFormatter


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add ``compare``, ``logs``, ``lineage`` and ``artifacts`` to the CLI."""
    compare = subparsers.add_parser(
        "compare",
        parents=parents,
        help="compare runs' parameters and metrics side by side",
        description="Show the parameters and metrics of two or more runs side by side; rows "
        "whose values differ are highlighted (and flagged `differs: true` in JSON).",
        epilog="examples:\n  cellpipe compare wine-20261128-1015 wine-20261128-1022\n"
        "  cellpipe compare RUN1 RUN2 RUN3 --json",
        formatter_class=_RAW,
    )
    compare.add_argument(
        "runs", metavar="RUN", nargs="+", help="run ids, unique prefixes, or latest[~N]"
    )
    compare.add_argument("--project", default=".", help=PROJECT_HELP)
    compare.add_argument("--json", action="store_true", help="print one JSON document")
    compare.set_defaults(handler=compare_cmd)

    logs = subparsers.add_parser(
        "logs",
        parents=parents,
        help="print a step's captured stdout and stderr",
        description="Print the stdout and stderr a step wrote while it ran, from its log "
        "artifact. A cached step shows the log of the run that computed it.",
        epilog="examples:\n  cellpipe logs wine-2026 train_forest\n"
        "  cellpipe logs wine-2026 train_forest --json",
        formatter_class=_RAW,
    )
    logs.add_argument("run", metavar="RUN", help=RUN_HELP)
    logs.add_argument("step", metavar="STEP", help="the step's name")
    logs.add_argument("--project", default=".", help=PROJECT_HELP)
    logs.add_argument("--json", action="store_true", help="print one JSON document")
    logs.set_defaults(handler=logs_cmd)

    lineage = subparsers.add_parser(
        "lineage",
        parents=parents,
        help="show where a run's or an artifact's data came from and where it went",
        description="Show the lineage graph of a run (its step runs, their inputs, outputs "
        "and external data) or of an artifact (the step runs that computed it and what they "
        "read, upstream; the step runs that read it and what they produced, downstream, "
        "across runs). Cache hits are not followed; they are counted as reuses. An artifact "
        "shows at most --limit step runs on each side of any artifact, newest runs first; "
        "the rest are counted ('... and 9950 more step runs'; in JSON `truncated` and the "
        "node's `more_readers` / `more_producers`). Equal values share an artifact, so an "
        "artifact lists every step run that produced it; RUN STEP VAR shows one step "
        "output's lineage: the step run that computed it and the step runs that read it. "
        "Each input names the step run whose output it read.",
        epilog="examples:\n  cellpipe lineage wine-2026\n"
        "  cellpipe lineage wine-2026 --format mermaid\n"
        "  cellpipe lineage sha256:9f2c... --format dot | dot -Tsvg > lineage.svg\n"
        "  cellpipe lineage 9f2c1a --json        (a unique digest prefix)\n"
        "  cellpipe lineage 9f2c1a --limit 10    (10 readers of each artifact; 0: all)\n"
        "  cellpipe lineage wine-2026 split X_train   (one step output)",
        formatter_class=_RAW,
    )
    lineage.add_argument(
        "target",
        metavar="RUN|ARTIFACT",
        help="a run id (or prefix, or latest[~N]), or an artifact digest",
    )
    lineage.add_argument(
        "step", metavar="STEP", nargs="?", help="with RUN and VAR: one step output's lineage"
    )
    lineage.add_argument("variable", metavar="VAR", nargs="?", help="the step's output")
    lineage.add_argument(
        "--format",
        choices=["text", "mermaid", "dot", "json"],
        default="text",
        help="output format (default text)",
    )
    lineage.add_argument(
        "--depth",
        type=_count_arg,
        default=50,
        help="for an artifact: step runs to follow each way (default 50)",
    )
    lineage.add_argument(
        "--limit",
        type=_count_arg,
        default=50,
        metavar="N",
        help="for an artifact: the most step runs shown on each side of any artifact "
        "(default 50; 0 shows all)",
    )
    lineage.add_argument("--project", default=".", help=PROJECT_HELP)
    lineage.add_argument("--json", action="store_true", help="same as --format json")
    lineage.set_defaults(handler=lineage_cmd)

    artifacts = subparsers.add_parser(
        "artifacts",
        parents=parents,
        help="copy stored values out of the artifact store",
        description="Work with stored values.",
        epilog="examples:\n  cellpipe artifacts get wine-2026 split X_train -o x_train.parquet",
        formatter_class=_RAW,
    )
    commands = artifacts.add_subparsers(title="commands", metavar="COMMAND")
    get = commands.add_parser(
        "get",
        parents=parents,
        help="write a step's output (or input) to a file",
        description="Write the stored bytes of a step's output (or, when no output has that "
        "name, its input) to FILE. The bytes are the value in its natural format: .npy "
        "(numpy), .parquet (pandas), .json, .joblib (scikit-learn), .pkl (cloudpickle); "
        "when FILE is a folder the file is named VAR plus that suffix.",
        epilog="examples:\n  cellpipe artifacts get wine-2026 split X_train -o x_train.parquet\n"
        "  cellpipe artifacts get wine-2026 train_forest forest -o models/\n"
        "  cellpipe artifacts get wine-2026 train_forest forest_acc -o - | jq .",
        formatter_class=_RAW,
    )
    get.add_argument("run", metavar="RUN", help=RUN_HELP)
    get.add_argument("step", metavar="STEP", help="the step's name")
    get.add_argument("variable", metavar="VAR", help="the variable's name")
    get.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="a file; a folder (existing, or ending in /) gets VAR.SUFFIX; - for stdout",
    )
    get.add_argument("--force", action="store_true", help="replace an existing FILE")
    get.add_argument("--project", default=".", help=PROJECT_HELP)
    get.add_argument("--json", action="store_true", help="print one JSON document")
    get.set_defaults(handler=artifacts_get_cmd)
    artifacts.set_defaults(handler=lambda _args: _usage(artifacts))


def _count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# -- compare ----------------------------------------------------------------------------------


def compare_cmd(args: argparse.Namespace) -> int:
    """Compare runs."""
    from cellpipe import api

    if len(args.runs) < 2:
        raise CellpipeError(
            "compare needs at least two runs", hint="cellpipe compare RUN1 RUN2 [RUN3 ...]"
        )
    result = api.compare(*args.runs, project=args.project)
    document = result.to_dict()
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    header = ["", *document["runs"]]
    for section in ("parameters", "metrics"):
        _highlighted_table(section.capitalize(), header, result.rows(section))
    return 0


def _highlighted_table(title: str, header: list[str], rows: list[tuple[list[str], bool]]) -> None:
    """A table whose differing rows are bold yellow on a terminal, marked ``*`` otherwise."""
    if render.is_terminal(sys.stdout):
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        console = Console(file=sys.stdout, highlight=False)
        table = Table(title=title, title_justify="left", box=None, header_style="bold")
        for column in header:
            table.add_column(column, overflow="fold")
        for cells, differs in rows:
            table.add_row(*(Text(c) for c in cells), style="bold yellow" if differs else "dim")
        console.print(table)
        return
    out = render.Output(sys.stdout, rich=False)
    out.heading(f"{title} (* differs)")
    out.table(["", *header], [["*" if d else "", *cells] for cells, d in rows])


# -- logs -------------------------------------------------------------------------------------


def logs_cmd(args: argparse.Namespace) -> int:
    """Print a step's log."""
    from cellpipe import api

    result = api.logs(args.run, args.step, project=args.project)
    if args.json:
        render.write_json(result.to_dict(), sys.stdout)
        return 0
    source_run = result["source_run"]
    if source_run:
        print(f"(cached: the log of run {source_run})", file=sys.stderr)
    text = result.text
    sys.stdout.write(text)
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")
    return 0


# -- lineage ----------------------------------------------------------------------------------


def lineage_cmd(args: argparse.Namespace) -> int:
    """Show a lineage graph."""
    from cellpipe import api

    if args.step is not None and args.variable is None:
        raise api.LineageUsageError(
            "lineage RUN STEP needs the output variable too",
            hint=f"cellpipe lineage {args.target} {args.step} VAR "
            f"(`cellpipe show {args.target}` lists the outputs)",
        )
    result = api.lineage(
        args.target,
        step=args.step,
        variable=args.variable,
        depth=args.depth,
        limit=args.limit,
        project=args.project,
    )
    fmt = "json" if args.json else args.format
    if fmt == "json":
        render.write_json(result.to_dict(), sys.stdout)
    elif fmt == "mermaid":
        sys.stdout.write(result.to_mermaid())
    elif fmt == "dot":
        sys.stdout.write(result.to_dot())
    else:
        sys.stdout.write(result.text())
    return 0


# -- artifacts get ------------------------------------------------------------------------------


def artifacts_get_cmd(args: argparse.Namespace) -> int:
    """Write a stored value to a file."""
    from cellpipe import api

    document = api.artifact_copy(
        args.run,
        args.step,
        args.variable,
        args.output,
        force=args.force,
        project=args.project,
        stream=sys.stdout.buffer,
    )
    if args.output == "-":
        return 0
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    target = Path(document["path"])
    suffix = document["suffix"]
    note = (
        ""
        if target.suffix == suffix
        else f" (a {document['serializer']} file; usual suffix {suffix})"
    )
    print(f"wrote {args.variable} ({document['type']}, {document['size']} bytes) to {target}{note}")
    return 0
