"""The run-history commands: ``cellpipe runs``, ``cellpipe show RUN`` and ``cellpipe why``.

Owns: listing runs, showing one run (parameters, metrics, every step with its cache decision,
outputs, log and executed notebook), and explaining a step's cache hit or miss.

Invariants: read-only; thin shells over the metadata store opened through `cellpipe.api`;
``--json`` prints exactly one JSON document. The project is found like git finds ``.git``: the
nearest folder at or above the working directory (or ``--project``) with a ``.cellpipe``
folder.

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellpipe.cli import render

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from cellpipe.storage.records import RunRecord, StepRunRecord

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


def _time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def run_document(run: RunRecord) -> dict[str, Any]:
    """Return a run as a JSON-ready dict."""
    duration = None
    if run.finished_at is not None:
        duration = round((run.finished_at - run.started_at).total_seconds(), 3)
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline,
        "notebook": run.notebook,
        "status": run.status.value,
        "started_at": _time(run.started_at),
        "finished_at": _time(run.finished_at),
        "duration_s": duration,
        "parameters": dict(run.parameters),
        "metrics": dict(run.metrics),
        "error": run.error,
    }


def unread_outputs(
    steps: Sequence[StepRunRecord], metrics: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Step -> its outputs no other step run of the run read and that are no metric.

    Every value a step binds is stored to load later (issue 11); these are the ones stored
    only for that.
    """
    read = {(producer, name) for s in steps for name, producer in s.input_sources.items()}
    return {
        s.step: sorted(n for n in s.outputs if (s.step, n) not in read and n not in metrics)
        for s in steps
    }


def step_document(
    record: StepRunRecord, state_dir: Path, unread: Sequence[str] = ()
) -> dict[str, Any]:
    """Return a step run as a JSON-ready dict (``unread``: see `unread_outputs`)."""
    duration = None
    if record.started_at is not None and record.finished_at is not None:
        duration = round((record.finished_at - record.started_at).total_seconds(), 3)
    scratch = state_dir / "runs" / record.run_id / "steps" / record.step
    return {
        "step": record.step,
        "status": record.status.value,
        "cache_reason": record.cache_reason,
        "cache_key": record.cache_key,
        "source_run": record.source_run,
        "duration_s": duration,
        "inputs": {k: v.to_json() for k, v in record.inputs.items()},
        "outputs": {k: v.to_json() for k, v in record.outputs.items()},
        "outputs_not_read_downstream": list(unread),
        "metrics": dict(record.metrics),
        "files_read": dict(record.files_read),
        "log": record.log_digest,
        "log_path": str(scratch / "log.txt") if (scratch / "log.txt").exists() else None,
        "notebook": record.notebook_digest,
        "error": record.error,
    }


def runs_cmd(args: argparse.Namespace) -> int:
    """List runs."""
    from cellpipe.api import find_project, open_project
    from cellpipe.storage.records import RunStatus

    settings = find_project(Path(args.project))
    notebook = str(Path(args.notebook).resolve()) if args.notebook else None
    status = RunStatus(args.status) if args.status else None
    from cellpipe.storage.lineage import RunFilter

    keep = RunFilter.parse(params=args.param, metrics=args.metric)
    with open_project(settings, create=False) as project:
        limit = None if keep else args.limit  # filter first, then cut to --limit
        found = project.metadata.list_runs(notebook=notebook, status=status, limit=limit)
    if keep:
        found = [r for r in found if keep.matches(r)][: args.limit]
    if args.json:
        render.write_json({"runs": [run_document(r) for r in found]}, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    # One column per parameter (of any run listed, in the order they first appear); a run
    # without that parameter shows "-".
    params = list(dict.fromkeys(name for run in found for name in run.parameters))
    rows = []
    for run in found:
        doc = run_document(run)
        metrics = ", ".join(f"{k}={_short(v, 24)}" for k, v in run.metrics.items())
        rows.append(
            [
                run.run_id,
                run.status.value,
                run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                f"{doc['duration_s']:.1f}s" if doc["duration_s"] is not None else "-",
                *[_short(run.parameters[p], 24) if p in run.parameters else "-" for p in params],
                metrics or "-",
            ]
        )
    out.table(["run", "status", "started (UTC)", "took", *params, "metrics"], rows)
    return 0


def show_cmd(args: argparse.Namespace) -> int:
    """Show one run."""
    from cellpipe.api import find_project, open_project

    settings = find_project(Path(args.project))
    with open_project(settings, create=False) as project:
        run = project.metadata.get_run(args.run)
        steps = project.metadata.step_runs(run.run_id)
        changes = _file_changes(project, run.run_id)
    document = run_document(run)
    unread = unread_outputs(steps, run.metrics)
    document["steps"] = [step_document(s, settings.state_dir, unread[s.step]) for s in steps]
    document["file_changes"] = changes
    notebook = settings.state_dir / "runs" / run.run_id / "run.ipynb"
    document["executed_notebook"] = str(notebook) if notebook.exists() else None
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    out.line(f"run {run.run_id}: {run.status.value}")
    out.line(f"notebook {run.notebook}")
    if run.error:
        out.line(f"error: {run.error.splitlines()[0]}")
    out.heading("Parameters")
    out.table(["name", "value"], [[k, _short(v)] for k, v in run.parameters.items()])
    out.heading("Metrics")
    out.table(["name", "value"], [[k, _short(v)] for k, v in run.metrics.items()])
    out.heading("Steps")
    rows = []
    for step in document["steps"]:
        took = f"{step['duration_s']:.2f}s" if step["duration_s"] is not None else "-"
        rows.append([step["step"], step["status"], took, step["cache_reason"] or "-"])
    out.table(["step", "status", "took", "cache decision"], rows)
    out.heading("Outputs")
    output_rows = []
    for step in document["steps"]:
        for name, ref in step["outputs"].items():
            read = "no" if name in step["outputs_not_read_downstream"] else "yes"
            output_rows.append(
                [step["step"], name, ref["serializer"], _size(ref["size"]), ref["digest"][:19],
                 read]
            )  # fmt: skip
    out.table(["step", "variable", "format", "size", "digest", "read downstream"], output_rows)
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
    return 0


def _file_changes(project: Any, run_id: str) -> list[dict[str, Any]]:
    """Return the workspace files each step changed, from its after snapshot (issue 10).

    Runs recorded before changes were attributed, or with snapshots off, have none.
    """
    from cellpipe.errors import CellpipeError
    from cellpipe.storage.lineage import SnapshotKind, history_for
    from cellpipe.storage.snapshots import read_manifest

    history = history_for(project.metadata)
    if history is None:
        return []
    found: list[dict[str, Any]] = []
    for snap in history.snapshots(run_id):
        if snap.kind is not SnapshotKind.AFTER:
            continue
        try:
            manifest = read_manifest(project.artifacts, snap.manifest)
        except CellpipeError:  # a missing manifest: `snapshot list` shows what there is
            continue
        for path, change in sorted(manifest.get("changes", {}).items()):
            found.append({"step": snap.step, "file": path, **change})
    return found


def why_cmd(args: argparse.Namespace) -> int:
    """Explain a step's cache decision."""
    from cellpipe.api import find_project, open_project, step_record

    settings = find_project(Path(args.project))
    with open_project(settings, create=False) as project:
        run, record = step_record(project, args.run, args.step)
        unread = unread_outputs(project.metadata.step_runs(run.run_id), run.metrics)
    document = {
        "run_id": run.run_id,
        "step": record.step,
        "status": record.status.value,
        "hit": record.status.value == "cached",
        "reason": record.cache_reason,
        "source_run": record.source_run,
        "cache_key": record.cache_key,
        "fields": dict(record.cache_fields),
        "outputs": sorted(record.outputs),
        "outputs_not_read_downstream": unread.get(record.step, []),
    }
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    out.line(f"{record.step} in run {run.run_id}: {record.status.value}")
    out.line(f"  {record.cache_reason or 'no cache decision recorded'}")
    if record.outputs:
        unread_names = set(unread.get(record.step, []))
        names = [
            f"{n} (not read downstream)" if n in unread_names else n for n in sorted(record.outputs)
        ]
        out.line(f"  outputs: {', '.join(names)}")
    return 0


def _short(value: object, width: int = render.VALUE_WIDTH) -> str:
    return render.short_value(value, width=width)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
