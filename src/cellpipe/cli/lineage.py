"""Run history commands: ``compare``, ``logs``, ``lineage`` and ``artifacts get``.

Owns: comparing runs' parameters and metrics side by side, printing a step's captured output,
the lineage graph of a run or an artifact as text, Mermaid, Graphviz dot or JSON, and copying
a stored value out of the artifact store.

``artifacts get`` writes the stored bytes unchanged: they already are the value in its natural
format (``.npy`` for numpy arrays, ``.parquet`` for data frames, ``.json``, ``.joblib`` for
scikit-learn objects, ``.pkl`` for cloudpickle), so no value is loaded or re-encoded and the
digest of the file written is the artifact's digest. ``cellpipe.load(run, step, var)``
returns the value itself.

Invariants: read-only on the stores; ``--json`` prints exactly one JSON document; the project
is found like git finds ``.git``.

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellpipe.cli import render
from cellpipe.errors import CellpipeError

if TYPE_CHECKING:
    from cellpipe.storage.lineage import LineageGraph, LineageNode

from cellpipe.cli._loading import PROJECT_HELP, RUN_HELP

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


def _same(values: list[Any]) -> bool:
    texts = {json.dumps(v, sort_keys=True) for v in values}
    return len(texts) <= 1


def compare_document(runs: list[Any]) -> dict[str, Any]:
    """Return the comparison of ``runs`` (RunRecords) as a JSON-ready dict."""
    document: dict[str, Any] = {"runs": [r.run_id for r in runs]}
    for section, attr in (("parameters", "parameters"), ("metrics", "metrics")):
        names: list[str] = []
        for run in runs:
            names.extend(n for n in getattr(run, attr) if n not in names)
        rows = []
        for name in names:
            values = [getattr(run, attr).get(name) for run in runs]
            present = [name in getattr(run, attr) for run in runs]
            rows.append(
                {
                    "name": name,
                    "values": values,
                    "differs": not (all(present) and _same(values)),
                }
            )
        document[section] = rows
    return document


def compare_cmd(args: argparse.Namespace) -> int:
    """Compare runs."""
    from cellpipe.api import find_project, open_project

    if len(args.runs) < 2:
        raise CellpipeError(
            "compare needs at least two runs", hint="cellpipe compare RUN1 RUN2 [RUN3 ...]"
        )
    settings = find_project(Path(args.project))
    with open_project(settings, create=False) as project:
        runs = [project.metadata.get_run(r) for r in args.runs]
    document = compare_document(runs)
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    header = ["", *[r.run_id for r in runs]]
    for section in ("parameters", "metrics"):
        rows = [
            (
                [
                    row["name"],
                    *[
                        _cell(v, row["name"] in getattr(run, section))
                        for v, run in zip(row["values"], runs, strict=True)
                    ],
                ],
                row["differs"],
            )
            for row in document[section]
        ]
        _highlighted_table(section.capitalize(), header, rows)
    return 0


def _cell(value: Any, present: bool = True) -> str:
    if not present:
        return "-"
    return render.short_value(value, width=40)


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
    from cellpipe.api import find_project, open_project, step_record

    settings = find_project(Path(args.project))
    with open_project(settings, create=False) as project:
        run, record = step_record(project, args.run, args.step)
        if record.log_digest is None:
            raise CellpipeError(
                f"step '{record.step}' of run {run.run_id} has no log ({record.status.value})",
                hint="only steps that ran (or reused a run that ran them) have a log; "
                f"`cellpipe show {run.run_id}` lists the steps",
            )
        with project.artifacts.open(record.log_digest) as f:
            data = f.read()
    text = data.decode("utf-8", "replace")
    if args.json:
        render.write_json(
            {
                "run_id": run.run_id,
                "step": record.step,
                "status": record.status.value,
                "source_run": record.source_run,
                "log": text,
            },
            sys.stdout,
        )
        return 0
    if record.source_run:
        print(f"(cached: the log of run {record.source_run})", file=sys.stderr)
    sys.stdout.write(text)
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")
    return 0


# -- lineage ----------------------------------------------------------------------------------


def lineage_cmd(args: argparse.Namespace) -> int:
    """Show a lineage graph."""
    from cellpipe.api import find_project, open_project
    from cellpipe.errors import RunNotFoundError
    from cellpipe.storage.lineage import (
        artifact_lineage,
        history_for,
        output_lineage,
        resolve_digest,
        run_lineage,
    )
    from cellpipe.storage.metadata import parse_latest

    if args.step is not None and args.variable is None:
        raise _LineageUsage(
            "lineage RUN STEP needs the output variable too",
            hint=f"cellpipe lineage {args.target} {args.step} VAR "
            f"(`cellpipe show {args.target}` lists the outputs)",
        )
    settings = find_project(Path(args.project))
    with open_project(settings, create=False) as project:
        history = history_for(project.metadata)
        if history is None:  # pragma: no cover - every shipped store has one
            raise CellpipeError("this metadata store keeps no lineage")
        target = args.target
        if args.step is not None:
            graph = output_lineage(
                project.metadata,
                history,
                target,
                args.step,
                args.variable,
                depth=args.depth,
                limit=args.limit or None,
            )
        else:
            try:
                graph = run_lineage(project.metadata, history, target)
            except RunNotFoundError as run_error:
                if "ambiguous" in run_error.message or parse_latest(target) is not None:
                    raise
                digest = resolve_digest(history, project.metadata, target)
                graph = artifact_lineage(
                    project.metadata, history, digest, depth=args.depth, limit=args.limit or None
                )
    fmt = "json" if args.json else args.format
    if fmt == "json":
        render.write_json(graph.to_json(), sys.stdout)
    elif fmt == "mermaid":
        sys.stdout.write(to_mermaid(graph))
    elif fmt == "dot":
        sys.stdout.write(to_dot(graph))
    else:
        sys.stdout.write(to_text(graph))
    return 0


class _LineageUsage(CellpipeError):
    headline = "invalid arguments"
    exit_code = 2


def _short(digest: str | None) -> str:
    return (digest or "")[7:19]


def _nodes(graph: LineageGraph) -> dict[str, LineageNode]:
    return {n.id: n for n in graph.nodes}


def _more(node: LineageNode) -> list[tuple[str, int]]:
    """The step runs the limit left out next to ``node``: ``(side, count)``."""
    return [
        (side, node.detail[key])
        for side, key in (("producers", "more_producers"), ("readers", "more_readers"))
        if node.detail.get(key)
    ]


def _more_text(count: int) -> str:
    return f"... and {count} more step run{'s' if count != 1 else ''}"


def _text_of(node: LineageNode) -> str:
    if node.kind == "artifact":
        kind = node.detail.get("type") or node.detail.get("serializer") or "artifact"
        return f"{_short(node.digest)} ({kind})"
    if node.kind == "data_source":
        return f"{node.label} [{node.detail.get('version', '')}]"
    return f"{node.step} in {node.run_id} [{node.status}]"


def to_text(graph: LineageGraph) -> str:
    """Return the graph as indented text: each step run with what it read and produced."""
    nodes = _nodes(graph)
    lines = [f"lineage of {graph.root_kind} {graph.root}"]
    incoming: dict[str, list[tuple[str, str, str]]] = {}
    outgoing: dict[str, list[tuple[str, str]]] = {}
    for edge in graph.edges:
        incoming.setdefault(edge.target, []).append((edge.label, edge.source, edge.producer or ""))
        outgoing.setdefault(edge.source, []).append((edge.label, edge.target))
    # Equal values share an artifact: an input names its producer on its edge; otherwise
    # (records before schema v5) every step run that produced the artifact is named.
    producers: dict[str, list[str]] = {}
    for e in graph.edges:
        if e.source.startswith("step:"):
            producers.setdefault(e.target, []).append(e.source)
    data_of = {e.target: e.source for e in graph.edges if e.source.startswith("data:")}
    # (artifact, producer step run) pairs some step run of the graph read: in a run's graph,
    # an output without one is a value stored only to load later (issue 11).
    read: set[tuple[str, str]] = set()
    for e in graph.edges:
        if e.target.startswith("step:"):
            for producer in [e.producer] if e.producer else producers.get(e.source, []):
                read.add((e.source, producer))
    for node in graph.nodes:
        if node.kind != "step_run":
            continue
        extra = (
            f" (reused from {node.detail['source_run']})" if node.detail.get("source_run") else ""
        )
        lines.append("")
        lines.append(f"{node.step}  run {node.run_id}  [{node.status}]{extra}")
        for label, source, producer in sorted(incoming.get(node.id, [])):
            origin = ""
            if producer in nodes:
                origin = f"  from {_text_of(nodes[producer])}"
            elif producer:  # a step run the graph does not show
                run_id, _, step = producer.removeprefix("step:").rpartition("/")
                origin = f"  from {step} in {run_id}"
            elif source in producers:
                origin = "  from " + " or ".join(_text_of(nodes[p]) for p in producers[source])
            elif source in data_of:
                origin = f"  from {_text_of(nodes[data_of[source]])}"
            lines.append(f"  in   {label} = {_text_of(nodes[source])}{origin}")
        for label, target in sorted(outgoing.get(node.id, [])):
            unread = ""
            if graph.root_kind == "run" and (target, node.id) not in read:
                unread = "  (not read downstream)"
            lines.append(f"  out  {label} = {_text_of(nodes[target])}{unread}")
    reused = [n for n in graph.nodes if n.detail.get("reused_by")]
    if reused:
        lines.append("")
        for node in reused:
            lines.append(
                f"{_short(node.digest)} was reused by "
                f"{render.plural(node.detail['reused_by'], 'cached run')}"
            )
    more = [(node, side, count) for node in graph.nodes for side, count in _more(node)]
    if more:
        lines.append("")
        for node, side, count in more:
            verb = "computed" if side == "producers" else "read"
            lines.append(f"{_short(node.digest)} was also {verb} by {_more_text(count)}")
        lines.append(
            f"(--limit {graph.limit}: the newest step runs on each side of an artifact are "
            "shown, the others counted; --limit N shows more, --limit 0 all)"
        )
    return "\n".join(lines) + "\n"


def _mermaid_label(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(graph: LineageGraph) -> str:
    """Return the graph as a Mermaid flowchart (steps boxes, artifacts rounded, data DBs).

    Step runs the limit left out are one dashed note per artifact and side.
    """
    ids = {n.id: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    for node in graph.nodes:
        label = _mermaid_label(_text_of(node))
        if node.kind == "step_run":
            lines.append(f'  {ids[node.id]}["{label}"]')
        elif node.kind == "artifact":
            lines.append(f'  {ids[node.id]}(["{label}"])')
        else:
            lines.append(f'  {ids[node.id]}[("{label}")]')
    for edge in graph.edges:
        lines.append(f'  {ids[edge.source]} -->|"{_mermaid_label(edge.label)}"| {ids[edge.target]}')
    for node in graph.nodes:
        for side, count in _more(node):
            note = f"{ids[node.id]}_{side}"
            lines.append(f'  {note}["{_more_text(count)}"]')
            if side == "producers":
                lines.append(f"  {note} -.-> {ids[node.id]}")
            else:
                lines.append(f"  {ids[node.id]} -.-> {note}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: LineageGraph) -> str:
    """Return the graph in Graphviz dot (left-out step runs as dashed notes)."""
    shapes = {"step_run": "box", "artifact": "ellipse", "data_source": "cylinder"}
    lines = ["digraph lineage {", "  rankdir=LR;"]
    for node in graph.nodes:
        label = _dot_quote(_text_of(node))
        lines.append(f"  {_dot_quote(node.id)} [label={label}, shape={shapes[node.kind]}];")
    for edge in graph.edges:
        lines.append(
            f"  {_dot_quote(edge.source)} -> {_dot_quote(edge.target)}"
            f" [label={_dot_quote(edge.label)}];"
        )
    for node in graph.nodes:
        for side, count in _more(node):
            note = _dot_quote(f"{node.id}#more_{side}")
            lines.append(
                f"  {note} [label={_dot_quote(_more_text(count))}, shape=note, style=dashed];"
            )
            source, target = (note, _dot_quote(node.id))
            if side == "readers":
                source, target = target, source
            lines.append(f"  {source} -> {target} [style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- artifacts get ------------------------------------------------------------------------------


def artifacts_get_cmd(args: argparse.Namespace) -> int:
    """Write a stored value to a file."""
    from cellpipe.api import find_project, open_project, step_record
    from cellpipe.errors import RunNotFoundError
    from cellpipe.storage.serializers import get_serializer

    settings = find_project(Path(args.project))
    with open_project(settings, create=False) as project:
        run, record = step_record(project, args.run, args.step)
        ref = record.outputs.get(args.variable) or record.inputs.get(args.variable)
        if ref is None:
            names = sorted({*record.outputs, *record.inputs})
            raise RunNotFoundError(
                f"step '{record.step}' of run {run.run_id} has no output or input "
                f"'{args.variable}'",
                hint="its values: " + (", ".join(names) or "none"),
            )
        suffix = get_serializer(ref.serializer).suffix
        if args.output == "-":
            with project.artifacts.open(ref.digest) as src:
                shutil.copyfileobj(src, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return 0
        target = Path(args.output)
        # `-o DIR/` (even one that does not exist yet) or an existing folder: the file goes
        # in it, named after the variable.
        if target.is_dir() or args.output.endswith(("/", os.sep)):
            target = target / f"{args.variable}{suffix}"
        if target.exists() and not args.force:
            raise CellpipeError(
                f"{target} exists", hint="choose another file name, or pass --force to replace it"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.cellpipe-tmp")
        with project.artifacts.open(ref.digest) as src, tmp.open("wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
        tmp.replace(target)
    document = {
        "run_id": run.run_id,
        "step": record.step,
        "variable": args.variable,
        "path": str(target),
        **ref.to_json(),
        "suffix": suffix,
    }
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    note = "" if target.suffix == suffix else f" (a {ref.serializer} file; usual suffix {suffix})"
    print(f"wrote {args.variable} ({ref.type_name}, {ref.size} bytes) to {target}{note}")
    return 0
