"""Snapshot commands: ``snapshot list``, ``snapshot restore`` and ``reproduce``.

Owns: listing a run's snapshots, restoring one into a folder, the files a step changed with
who changed them (``snapshot changes``), and re-running a run from its start snapshot to check
that it reproduces, output by output.

``reproduce`` restores the start snapshot (the notebook and the workspace files as they were)
into a folder (default ``.cellpipe/reproduce/RUN``, emptied first; links that lead out of the
workspace are not recreated and are listed), runs it there with the same
parameters and ``--no-cache`` into that folder's own fresh ``.cellpipe``, and compares every
step output's digest with the original's. It also lists how the environment differs (Python,
package versions). The exit status is 0 when every output is identical, 1 otherwise.

Invariants: ``restore`` never writes into a non-empty folder without ``--force``, nor a file
the project's ignore rules exclude, nor a link out of its folder; ``--json`` prints exactly one
JSON document.

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from cellpipe.cli import render
from cellpipe.cli._loading import PROJECT_HELP, RUN_HELP
from cellpipe.errors import CellpipeError
from cellpipe.views.format import size_text

_RAW = argparse.RawDescriptionHelpFormatter


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add ``snapshot`` and ``reproduce`` to the CLI."""
    snapshot = subparsers.add_parser(
        "snapshot",
        parents=parents,
        help="list or restore a run's workspace snapshots",
        description="Snapshots record the notebook, the environment and the workspace files "
        "at the start of a run, and the workspace with the step's values before and after "
        "each step that ran. Files listed in .cellpipeignore (.gitignore syntax) and "
        "secret-looking files (.env*, keys, credentials; !PATTERN in .cellpipeignore takes "
        "one back) are left out; symbolic links are recorded as links, never followed.",
        epilog="examples:\n  cellpipe snapshot list wine-2026\n"
        "  cellpipe snapshot restore wine-2026 --to /tmp/wine-start\n"
        "  cellpipe snapshot restore wine-2026 --step train_forest --after --to /tmp/after-train",
        formatter_class=_RAW,
    )
    commands = snapshot.add_subparsers(title="commands", metavar="COMMAND")
    listing = commands.add_parser(
        "list",
        parents=parents,
        help="list a run's snapshots",
        description="List a run's snapshots: step, kind, file count, size and manifest.",
        epilog="examples:\n  cellpipe snapshot list wine-2026 --json",
        formatter_class=_RAW,
    )
    listing.add_argument("run", metavar="RUN", help=RUN_HELP)
    listing.add_argument("--project", default=".", help=PROJECT_HELP)
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    listing.set_defaults(handler=list_cmd)

    restore = commands.add_parser(
        "restore",
        parents=parents,
        help="write a snapshot's files into a folder",
        description="Write the workspace files of a snapshot into a folder: the run start by "
        "default, or the state before (--before, the default with --step) or after (--after) "
        "a step. A step's input values are loaded with cellpipe.restore(RUN, STEP).",
        epilog="examples:\n  cellpipe snapshot restore wine-2026 --to /tmp/wine\n"
        "  cellpipe snapshot restore wine-2026 --step split --after --to /tmp/split --json",
        formatter_class=_RAW,
    )
    restore.add_argument("run", metavar="RUN", help=RUN_HELP)
    restore.add_argument("--step", help="a step's snapshot instead of the run start")
    when = restore.add_mutually_exclusive_group()
    when.add_argument("--before", action="store_true", help="before the step ran (default)")
    when.add_argument("--after", action="store_true", help="after the step ran")
    restore.add_argument("--to", required=True, metavar="DIR", help="the folder to write")
    restore.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    restore.add_argument(
        "--skip-outside-links",
        action="store_true",
        help="leave out symbolic links whose target is outside DIR (default: refuse)",
    )
    restore.add_argument("--project", default=".", help=PROJECT_HELP)
    restore.add_argument("--json", action="store_true", help="print one JSON document")
    restore.set_defaults(handler=restore_cmd)

    changes = commands.add_parser(
        "changes",
        parents=parents,
        help="the files a step changed, and which step each change is attributed to",
        description="List the workspace files that changed between a step's before and after "
        "snapshots. Steps that run at the same time share the workspace, so each change says "
        "who made it: 'seen' (the step's audit hook saw the file opened for writing), "
        "'unseen' (no other step ran meanwhile, yet the hook did not see it: a subprocess), "
        "or 'shared' (other steps ran meanwhile: one of the steps named made it).",
        epilog="examples:\n  cellpipe snapshot changes wine-2026 train_forest --json",
        formatter_class=_RAW,
    )
    changes.add_argument("run", metavar="RUN", help=RUN_HELP)
    changes.add_argument("step", metavar="STEP", help="the step")
    changes.add_argument("--project", default=".", help=PROJECT_HELP)
    changes.add_argument("--json", action="store_true", help="print one JSON document")
    changes.set_defaults(handler=changes_cmd)
    snapshot.set_defaults(handler=lambda _args: _usage(snapshot))

    reproduce = subparsers.add_parser(
        "reproduce",
        parents=parents,
        help="re-run a run from its start snapshot and check every output is identical",
        description="Restore the run's start snapshot into a folder, run it there again with "
        "the same parameters (no cache, its own fresh .cellpipe), and report for every step "
        "output whether the result is identical (same digest). Exit status 0 when all are.",
        epilog="examples:\n  cellpipe reproduce wine-2026\n"
        "  cellpipe reproduce wine-2026 --to /tmp/wine-repro --json",
        formatter_class=_RAW,
    )
    reproduce.add_argument("run", metavar="RUN", help=RUN_HELP)
    reproduce.add_argument(
        "--to", metavar="DIR", help="where to restore and run (default .cellpipe/reproduce/RUN)"
    )
    reproduce.add_argument("--force", action="store_true", help="use a non-empty --to DIR")
    reproduce.add_argument("-j", "--jobs", type=int, help="steps at once (default: all cores)")
    reproduce.add_argument("--project", default=".", help=PROJECT_HELP)
    reproduce.add_argument("--json", action="store_true", help="print one JSON document")
    reproduce.set_defaults(handler=reproduce_cmd)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def list_cmd(args: argparse.Namespace) -> int:
    """List a run's snapshots."""
    from cellpipe import api

    document = api.snapshots(args.run, project=args.project)
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    out.line(f"snapshots of run {document['run_id']}")
    rows = [
        [
            s["step"] or "(run start)",
            s["kind"],
            str(s["file_count"]),
            size_text(s["total_size"]),
            s["manifest"][7:19],
            _clock(s["created_at"]),
        ]
        for s in document["snapshots"]
    ]
    out.table(["step", "kind", "files", "size", "manifest", "taken (UTC)"], rows)
    return 0


def restore_cmd(args: argparse.Namespace) -> int:
    """Restore a snapshot into a folder."""
    from cellpipe import api

    if (args.before or args.after) and not args.step:
        raise CellpipeError("--before and --after need --step", hint="add --step STEP")
    document = api.restore_snapshot(
        args.run,
        args.to,
        step=args.step,
        after=args.after,
        force=args.force,
        skip_outside_links=args.skip_outside_links,
        project=args.project,
    )
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    what = f"step '{args.step}' {document['kind']}" if args.step else "run start"
    print(
        f"restored {render.plural(document['files'], 'file')} "
        f"({size_text(document['total_size'])}) of {what} to {Path(args.to)}"
    )
    if document["left_out"]:
        print(
            f"left out by the ignore rules (secrets, .cellpipeignore): "
            f"{', '.join(document['left_out'])}"
        )
    if document["links_skipped"]:
        print(f"links to outside the folder, left out: {', '.join(document['links_skipped'])}")
    if args.step and document["inputs"]:
        print(
            f"its inputs ({', '.join(document['inputs'])}): "
            f"cellpipe.restore('{document['run_id']}', '{args.step}') in a notebook loads them"
        )
    return 0


def changes_cmd(args: argparse.Namespace) -> int:
    """List the files a step changed, with the step each change is attributed to."""
    from cellpipe import api

    document = api.snapshot_changes(args.run, args.step, project=args.project)
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    out.line(f"files changed while step '{args.step}' of run {document['run_id']} ran")
    out.table(
        ["file", "change", "by", "attribution"],
        [
            [path, c["change"], ", ".join(c["by"]), c["attribution"]]
            for path, c in document["changes"].items()
        ],
    )
    return 0


def reproduce_cmd(args: argparse.Namespace) -> int:
    """Re-run a run from its start snapshot and compare the outputs."""
    from cellpipe import api

    document = api.reproduce(
        args.run,
        to=args.to,
        force=args.force,
        jobs=args.jobs,
        project=args.project,
        progress=None if args.json else lambda line: print(line, file=sys.stderr),
    )
    if args.json:
        render.write_json(document, sys.stdout)
    else:
        _print_reproduce(document)
    return 0 if document["identical"] else 1


def _print_reproduce(document: dict[str, Any]) -> None:
    out = render.Output(sys.stdout)
    verdict = "identical" if document["identical"] else "NOT identical"
    out.line(
        f"run {document['run_id']} reproduced as {document['reproduced_run']} "
        f"({document['reproduced_status']}): {verdict}"
    )
    rows = []
    for step in document["steps"]:
        if not step["outputs"]:
            rows.append([step["step"], "-", step["reproduced_status"] or "-", "-"])
        for o in step["outputs"]:
            mark = "identical" if o["identical"] else "differs"
            if not o.get("read_downstream", True):
                mark += " (not read downstream)"
            rows.append([step["step"], o["variable"], step["reproduced_status"] or "-", mark])
    out.heading("Outputs")
    out.table(["step", "variable", "status", "result"], rows)
    out.heading("Metrics")
    out.table(
        ["name", "original", "reproduced", "result"],
        [
            [m["name"], str(m["original"]), str(m["reproduced"]),
             "identical" if m["identical"] else "differs"]
            for m in document["metrics"]
        ],
    )  # fmt: skip
    out.heading("Environment changes since the run")
    changes = document["environment_changes"]
    for line in changes[:20]:
        out.line(f"  {line}")
    if len(changes) > 20:
        out.line(f"  ... and {len(changes) - 20} more (see --json)")
    if not changes:
        out.line("  (none)")
    out.line()
    out.line(f"folder: {document['folder']}")
    if document.get("left_out"):
        out.line(f"left out by the ignore rules: {', '.join(document['left_out'])}")
    if document.get("links_skipped"):
        out.line(
            "links to outside the workspace, not recreated: " + ", ".join(document["links_skipped"])
        )


def _clock(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%H:%M:%S.%f")[:-3]
