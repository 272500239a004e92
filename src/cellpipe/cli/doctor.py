"""``cellpipe doctor``: check the project's stores; ``--repair`` rebuilds a damaged database.

Owns: the command's arguments, progress lines and rendering. The checks and the rebuild are
`cellpipe.storage.doctor`.

Invariants: without ``--repair`` nothing is written; the damaged database is renamed, never
deleted; ``--json`` prints exactly one JSON document (progress goes to stderr). Exit status 0
when every check passed (or the repair succeeded), 1 otherwise.

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import sys

from cellpipe.cli import render
from cellpipe.cli._loading import PROJECT_HELP


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add ``doctor`` to the CLI."""
    doctor = subparsers.add_parser(
        "doctor",
        parents=parents,
        help="check the project's database and artifact store; --repair a damaged database",
        description="Check the project's metadata database (integrity, schema), its artifact "
        "store (readable, a sample re-hashed), write permissions and free space. --repair "
        "moves a damaged SQLite database aside as <name>.damaged-<time> (never deleted), starts "
        "a new one and rebuilds the run records that the run folders still prove.",
        epilog="examples:\n  cellpipe doctor\n  cellpipe doctor --json\n  cellpipe doctor --repair",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument("--project", default=".", help=PROJECT_HELP)
    doctor.add_argument(
        "--repair",
        action="store_true",
        help="move a damaged database aside and rebuild the run records it can",
    )
    doctor.add_argument(
        "--sample",
        type=int,
        default=50,
        metavar="N",
        help="how many artifacts to re-hash (default 50; 0 skips)",
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON document")
    doctor.set_defaults(handler=doctor_cmd)


def _progress(what: str, done: int, total: int) -> None:
    # The end of a phase, and every tenth of the way on long ones (stderr: --json stays clean).
    if done == total or (total >= 200 and done and done % (total // 10) == 0):
        print(f"  {what}: {done}/{total}", file=sys.stderr, flush=True)


def doctor_cmd(args: argparse.Namespace) -> int:
    """Check (and with ``--repair`` rebuild) the project's stores."""
    from cellpipe import api

    settings, report, repair = api.doctor(
        repair=args.repair, sample=args.sample, project=args.project, progress=_progress
    )
    ok = report.ok if repair is None else repair.moved_to is not None or report.ok
    if args.json:
        document = report.to_json()
        document["repair"] = repair.to_json() if repair is not None else None
        document["ok"] = ok
        render.write_json(document, sys.stdout)
        return 0 if ok else 1
    out = render.Output(sys.stdout)
    out.heading(f"cellpipe doctor: {settings.root}")
    marks = {"ok": "ok", "warning": "WARN", "error": "FAIL"}
    for finding in report.findings:
        out.line(
            f"  {marks.get(finding.status, finding.status):4}  {finding.check}: {finding.message}"
        )
        if finding.hint and finding.status != "ok":
            out.line(f"        hint: {finding.hint}")
    if repair is not None:
        out.line()
        out.line(f"repair: {repair.message}")
        for item in repair.skipped:
            out.line(f"  skipped: {item}")
        for note in repair.notes:
            out.line(f"  note: {note}")
        if repair.not_recovered:
            out.line("  not recovered: " + "; ".join(repair.not_recovered))
    elif report.damaged_database:
        out.line()
        out.line("run `cellpipe doctor --repair` to rebuild the run records")
    return 0 if ok else 1
