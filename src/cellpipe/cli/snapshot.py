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
import shutil
import sys
from pathlib import Path
from typing import Any

from cellpipe.cli import render
from cellpipe.cli._loading import PROJECT_HELP, RUN_HELP
from cellpipe.errors import CellpipeError

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
    from cellpipe.api import find_project, open_project
    from cellpipe.storage.lineage import history_for

    settings = find_project(Path(args.project))
    with open_project(settings, create=False) as project:
        run = project.metadata.get_run(args.run)
        history = history_for(project.metadata)
        found = list(history.snapshots(run.run_id)) if history is not None else []
    if args.json:
        render.write_json(
            {"run_id": run.run_id, "snapshots": [s.to_json() for s in found]}, sys.stdout
        )
        return 0
    out = render.Output(sys.stdout)
    out.line(f"snapshots of run {run.run_id}")
    rows = [
        [
            s.step or "(run start)",
            s.kind.value,
            str(s.file_count),
            _size(s.total_size),
            s.manifest[7:19],
            s.created_at.strftime("%H:%M:%S.%f")[:-3],
        ]
        for s in found
    ]
    out.table(["step", "kind", "files", "size", "manifest", "taken (UTC)"], rows)
    return 0


def _pick(history: Any, run_id: str, step: str | None, after: bool) -> Any:
    from cellpipe.storage.lineage import SnapshotKind

    kind = (
        SnapshotKind.START if step is None else SnapshotKind.AFTER if after else SnapshotKind.BEFORE
    )
    wanted = step or ""
    snapshots = list(history.snapshots(run_id)) if history is not None else []
    for snap in snapshots:
        if snap.step == wanted and snap.kind is kind:
            return snap
    have = ", ".join(f"{s.step or '(start)'} {s.kind.value}" for s in snapshots) or "none"
    raise CellpipeError(
        f"run {run_id} has no {kind.value} snapshot" + (f" of step '{step}'" if step else ""),
        hint=f"its snapshots: {have}. Cached steps have none (they did not run); runs "
        "recorded before snapshots existed have none either",
    )


def restore_cmd(args: argparse.Namespace) -> int:
    """Restore a snapshot into a folder."""
    from cellpipe.api import find_project, open_project
    from cellpipe.storage.lineage import history_for
    from cellpipe.storage.snapshots import (
        IgnoreRules,
        manifest_files,
        read_manifest,
        restore_files,
    )

    if (args.before or args.after) and not args.step:
        raise CellpipeError("--before and --after need --step", hint="add --step STEP")
    settings = find_project(Path(args.project))
    target = Path(args.to)
    with open_project(settings, create=False) as project:
        run = project.metadata.get_run(args.run)
        snap = _pick(history_for(project.metadata), run.run_id, args.step, args.after)
        manifest = read_manifest(project.artifacts, snap.manifest)
        files = manifest_files(project.artifacts, manifest)
        restored = restore_files(
            project.artifacts,
            files,
            target,
            force=args.force,
            ignore=IgnoreRules.for_workspace(settings.root),
            skip_outside_links=args.skip_outside_links,
        )
    count = restored.files
    document = {
        "run_id": run.run_id,
        "step": args.step,
        "kind": snap.kind.value,
        "to": str(target.resolve()),
        "files": count,
        "left_out": list(restored.left_out),
        "links_skipped": list(restored.links_skipped),
        "total_size": snap.total_size,
        "manifest": snap.manifest,
        "inputs": manifest.get("inputs", {}),
        "outputs": manifest.get("outputs", {}),
    }
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    what = f"step '{args.step}' {snap.kind.value}" if args.step else "run start"
    print(
        f"restored {render.plural(count, 'file')} ({_size(snap.total_size)}) of {what} to {target}"
    )
    if restored.left_out:
        print(
            f"left out by the ignore rules (secrets, .cellpipeignore): "
            f"{', '.join(restored.left_out)}"
        )
    if restored.links_skipped:
        print(f"links to outside the folder, left out: {', '.join(restored.links_skipped)}")
    if args.step and manifest.get("inputs"):
        print(
            f"its inputs ({', '.join(manifest['inputs'])}): "
            f"cellpipe.restore('{run.run_id}', '{args.step}') in a notebook loads them"
        )
    return 0


def changes_cmd(args: argparse.Namespace) -> int:
    """List the files a step changed, with the step each change is attributed to."""
    from cellpipe.api import find_project, open_project
    from cellpipe.storage.lineage import history_for
    from cellpipe.storage.snapshots import read_manifest

    settings = find_project(Path(args.project))
    with open_project(settings, create=False) as project:
        run = project.metadata.get_run(args.run)
        snap = _pick(history_for(project.metadata), run.run_id, args.step, True)
        manifest = read_manifest(project.artifacts, snap.manifest)
    if "changes" not in manifest:
        raise CellpipeError(
            f"the after snapshot of step '{args.step}' in run {run.run_id} records no changes",
            hint="runs recorded before cellpipe attributed changes, and runs with snapshots "
            "off (CELLPIPE_SNAPSHOT_MAX_BYTES=0), have none",
        )
    changes: dict[str, Any] = manifest["changes"]
    if args.json:
        render.write_json({"run_id": run.run_id, "step": args.step, "changes": changes}, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    out.line(f"files changed while step '{args.step}' of run {run.run_id} ran")
    out.table(
        ["file", "change", "by", "attribution"],
        [[path, c["change"], ", ".join(c["by"]), c["attribution"]] for path, c in changes.items()],
    )
    return 0


def _environment_changes(recorded: dict[str, Any] | None) -> list[str]:
    from cellpipe.storage.snapshots import environment

    if not recorded:
        return ["the run recorded no environment"]
    now = environment()
    changes = []
    if recorded.get("python") != now["python"]:
        changes.append(f"python {recorded.get('python')} -> {now['python']}")
    old, new = recorded.get("packages", {}), now["packages"]
    for name in sorted({*old, *new}):
        if old.get(name) != new.get(name):
            changes.append(f"{name} {old.get(name, '(absent)')} -> {new.get(name, '(absent)')}")
    return changes


def reproduce_cmd(args: argparse.Namespace) -> int:
    """Re-run a run from its start snapshot and compare the outputs."""
    from cellpipe.api import find_project, load_pipeline, open_project
    from cellpipe.config import Settings
    from cellpipe.pipeline.parameters import resolve_parameters
    from cellpipe.runner.orchestrate import RunOptions, run_pipeline
    from cellpipe.storage.lineage import history_for
    from cellpipe.storage.snapshots import (
        IgnoreRules,
        manifest_files,
        read_manifest,
        restore_files,
    )

    settings = find_project(Path(args.project))
    with open_project(settings, create=False) as project:
        run = project.metadata.get_run(args.run)
        snap = _pick(history_for(project.metadata), run.run_id, None, False)
        manifest = read_manifest(project.artifacts, snap.manifest)
        original = {s.step: s for s in project.metadata.step_runs(run.run_id)}
        folder = Path(args.to) if args.to else settings.state_dir / "reproduce" / run.run_id
        force = args.force
        if not args.to and folder.exists():
            shutil.rmtree(folder)  # our own scratch folder: start clean every time
        # A link out of the workspace (a dataset elsewhere) is not recreated: the document
        # names it, and a step that needs it fails visibly instead of reading outside.
        restored = restore_files(
            project.artifacts,
            manifest_files(project.artifacts, manifest),
            folder,
            force=force,
            ignore=IgnoreRules.for_workspace(settings.root),
            skip_outside_links=True,
        )
    notebook = folder / manifest["notebook"]
    pipeline = load_pipeline(notebook)
    known = {p.name for p in pipeline.parameters}
    values = resolve_parameters(
        pipeline, text={}, values={k: v for k, v in run.parameters.items() if k in known}
    )
    state = folder / ".cellpipe"
    local = Settings(
        root=folder.resolve(),
        db_url=f"sqlite:///{(state / 'cellpipe.db').resolve()}",
        artifacts_url=str((state / "artifacts").resolve()),
    )
    if not args.json:
        print(f"reproducing {run.run_id} in {folder} ...", file=sys.stderr)
    with open_project(local) as fresh:
        report = run_pipeline(
            pipeline,
            params=values,
            artifacts=fresh.artifacts,
            metadata=fresh.metadata,
            state_dir=local.state_dir,
            options=RunOptions(use_cache=False, jobs=args.jobs),
        )
    document = _reproduce_document(run, report, original, folder, manifest)
    document["left_out"] = list(restored.left_out)
    document["links_skipped"] = list(restored.links_skipped)
    if args.json:
        render.write_json(document, sys.stdout)
    else:
        _print_reproduce(document)
    return 0 if document["identical"] else 1


def _reproduce_document(
    run: Any, report: Any, original: dict[str, Any], folder: Path, manifest: dict[str, Any]
) -> dict[str, Any]:
    steps = []
    all_same = True
    for name, old in original.items():
        new = report.steps.get(name)
        outputs = []
        for variable in sorted({*old.outputs, *(new.outputs if new else {})}):
            a = old.outputs.get(variable)
            b = new.outputs.get(variable) if new else None
            same = a is not None and b is not None and a.digest == b.digest
            all_same = all_same and same
            outputs.append(
                {
                    "variable": variable,
                    "original": a.digest if a else None,
                    "reproduced": b.digest if b else None,
                    "identical": same,
                }
            )
        steps.append(
            {
                "step": name,
                "original_status": old.status.value,
                "reproduced_status": new.status.value if new else None,
                "identical": all(o["identical"] for o in outputs),
                "outputs": outputs,
            }
        )
    metrics = []
    for name in sorted({*run.metrics, *report.run.metrics}):
        a, b = run.metrics.get(name), report.run.metrics.get(name)
        metrics.append({"name": name, "original": a, "reproduced": b, "identical": a == b})
    return {
        "run_id": run.run_id,
        "reproduced_run": report.run.run_id,
        "reproduced_status": report.run.status.value,
        "folder": str(folder.resolve()),
        "identical": all_same and report.run.status.value == "succeeded",
        "steps": steps,
        "metrics": metrics,
        "environment_changes": _environment_changes(manifest.get("environment")),
    }


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


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
