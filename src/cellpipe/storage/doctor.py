"""`cellpipe doctor`: check a project's stores, and rebuild a damaged SQLite database.

Owns: `check_project` (database integrity, schema version, artifact store readable, a sample
of artifacts re-hashed, write permissions, free space), `repair_project` (move a damaged
database aside as ``<name>.damaged-<UTC time>``, never deleting it, start a new one and
rebuild the run records that the run folders still prove), and their reports.

What a rebuild can honestly recover, from ``.cellpipe/runs/<run id>/``: the run (id, pipeline,
notebook path, start time from the id, parameters from the executed notebook's
``injected-parameters`` cell), and for each step that ran (``steps/<step>/result.json``) its
status, outputs (digest, serializer, size, type; kept only when the artifact is still in the
store), metrics, error, log and executed notebook. What it cannot: cache keys (so the next run
re-runs every step once), cache hits (they wrote no result), inputs and their lineage, files
read, snapshots, model registry entries, and the notebook's digest at run start. The report
lists these.

Invariants: checking never writes; the damaged file is only ever renamed; a rebuild never
invents a record that no file proves.

Must not depend on: config, the runner, notebooks, the pipeline model.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cellpipe.errors import CellpipeError, StorageError
from cellpipe.storage._sql import sqlite_path
from cellpipe.storage.os_errors import DOCTOR_HINT
from cellpipe.storage.records import ArtifactRef, RunRecord, RunStatus, StepRunRecord, StepStatus

__all__ = [
    "LOW_SPACE_BYTES",
    "Finding",
    "ProjectReport",
    "RepairReport",
    "check_project",
    "repair_project",
]

LOW_SPACE_BYTES = 200 * 1024 * 1024
"""Free space under which `check_project` warns (a run writes outputs, logs and notebooks)."""

NOT_RECOVERED = (
    "cache keys (the next run re-runs each step once)",
    "cache hits (a reused step leaves no result in its run folder)",
    "step inputs and their lineage, files read",
    "snapshots and the model registry",
    "the notebook's digest at run start",
)
"""What a rebuild cannot recover from the run folders."""

Progress = Callable[[str, int, int], None]
"""``progress(what, done, total)``: called while long work goes on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One check: ``ok``, ``warning`` or ``error``, in words, with how to fix it."""

    check: str
    status: str
    message: str
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the finding as a JSON-ready dict."""
        return {
            "check": self.check,
            "status": self.status,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectReport:
    """Every finding of `check_project`; ``ok`` unless one is an error."""

    database: str
    artifacts: str
    findings: tuple[Finding, ...]
    damaged_database: bool = False

    @property
    def ok(self) -> bool:
        """Whether no finding is an error."""
        return all(f.status != "error" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return {
            "ok": self.ok,
            "database": self.database,
            "artifacts": self.artifacts,
            "damaged_database": self.damaged_database,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairReport:
    """What `repair_project` did: where the old database went and what was rebuilt."""

    moved_to: str | None
    runs_rebuilt: tuple[str, ...] = ()
    step_runs_rebuilt: int = 0
    skipped: tuple[str, ...] = ()
    not_recovered: tuple[str, ...] = NOT_RECOVERED
    message: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return {
            "moved_to": self.moved_to,
            "runs_rebuilt": list(self.runs_rebuilt),
            "step_runs_rebuilt": self.step_runs_rebuilt,
            "skipped": list(self.skipped),
            "not_recovered": list(self.not_recovered),
            "message": self.message,
            "notes": list(self.notes),
        }


# -- checks ------------------------------------------------------------------------------------


def _database_findings(db_url: str) -> tuple[list[Finding], bool]:
    """Integrity and schema of the database; returns the findings and whether it is damaged."""
    from cellpipe.storage.metadata import SCHEMA_VERSION

    path = sqlite_path(db_url)
    if path is None:  # PostgreSQL and other servers: can we open it at all?
        return [_open_finding(db_url)], False
    if not Path(path).exists():
        return [
            Finding(
                check="database",
                status="ok",
                message=f"{path} does not exist yet (the first run creates it)",
            )
        ], False
    findings: list[Finding] = []
    try:
        conn = sqlite3.connect(f"file:{quote(str(Path(path).absolute()))}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [
            Finding(check="database", status="error", message=f"cannot open {path}: {exc}")
        ], False
    try:
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)").fetchall()]
        except sqlite3.DatabaseError as exc:
            rows = [str(exc)]
        if rows != ["ok"]:
            shown = "; ".join(rows[:5])
            findings.append(
                Finding(
                    check="database",
                    status="error",
                    message=f"{path} is damaged: {shown}",
                    hint="`cellpipe doctor --repair` moves it aside (kept, never deleted), "
                    "starts a new database and rebuilds the run records it can; "
                    + DOCTOR_HINT.split(";")[0],
                )
            )
            return findings, True
        findings.append(Finding(check="database", status="ok", message=f"{path}: integrity ok"))
        try:
            version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        except sqlite3.DatabaseError:
            version = 0
    finally:
        conn.close()
    version = int(version or 0)
    if version > SCHEMA_VERSION:
        findings.append(
            Finding(
                check="schema",
                status="error",
                message=f"schema v{version} is newer than this cellpipe's v{SCHEMA_VERSION}",
                hint="upgrade cellpipe",
            )
        )
    elif version < SCHEMA_VERSION:
        findings.append(
            Finding(
                check="schema",
                status="warning",
                message=f"schema v{version}; the next command that writes migrates it to "
                f"v{SCHEMA_VERSION}",
            )
        )
    else:
        findings.append(Finding(check="schema", status="ok", message=f"schema v{version}"))
    return findings, False


def _open_finding(db_url: str) -> Finding:
    from cellpipe.storage.metadata import SqlMetadataStore

    try:
        store = SqlMetadataStore(db_url)
    except CellpipeError as exc:
        return Finding(check="database", status="error", message=exc.message, hint=exc.hint)
    try:
        safe = store._safe_url()  # the store's own masking of the password
    finally:
        store.close()
    return Finding(check="database", status="ok", message=f"{safe}: reachable")


def _artifact_files(root: Path) -> Iterator[Path]:
    objects = root / "sha256"
    if not objects.is_dir():
        return
    for sub in sorted(objects.iterdir()):
        if not sub.is_dir():
            continue
        for entry in sorted(sub.iterdir()):
            if len(entry.name) == 64 and "." not in entry.name:
                yield entry


def _artifact_findings(root: Path, *, sample: int, progress: Progress | None) -> list[Finding]:
    if not root.exists():
        return [Finding(check="artifacts", status="ok", message=f"{root} does not exist yet")]
    try:
        files = list(_artifact_files(root))
    except OSError as exc:
        return [
            Finding(
                check="artifacts",
                status="error",
                message=f"cannot read the artifact store {root}: {exc.strerror or exc}",
                hint=f"make {root} readable for this user",
            )
        ]
    findings = [Finding(check="artifacts", status="ok", message=f"{root}: {len(files)} artifacts")]
    if not files or sample <= 0:
        return findings
    step = max(1, len(files) // sample)
    chosen = files[::step][:sample]
    bad: list[str] = []
    for i, path in enumerate(chosen):
        if progress is not None:
            progress("verifying artifacts", i, len(chosen))
        digest = hashlib.sha256()
        try:
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            bad.append(f"{path}: {exc.strerror or exc}")
            continue
        if digest.hexdigest() != path.name:
            bad.append(f"{path}: bytes do not match the name")
    if progress is not None:
        progress("verifying artifacts", len(chosen), len(chosen))
    if bad:
        findings.append(
            Finding(
                check="digests",
                status="error",
                message=f"{len(bad)} of {len(chosen)} sampled artifacts are damaged: "
                + "; ".join(bad[:5]),
                hint="re-run the steps that produced them with --no-cache",
            )
        )
    else:
        findings.append(
            Finding(
                check="digests",
                status="ok",
                message=f"{len(chosen)} sampled artifacts match their digests",
            )
        )
    return findings


def _space_findings(state_dir: Path) -> list[Finding]:
    findings: list[Finding] = []
    if state_dir.exists():
        writable = os.access(state_dir, os.W_OK)
        findings.append(
            Finding(
                check="permissions",
                status="ok" if writable else "warning",
                message=f"{state_dir} is writable"
                if writable
                else f"{state_dir} is read-only: read commands work, runs and registrations fail",
                hint=None if writable else f"`chmod -R u+w {state_dir}` to run here",
            )
        )
    probe = state_dir if state_dir.exists() else state_dir.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return [
            *findings,
            Finding(check="disk space", status="warning", message=f"unknown: {exc}"),
        ]
    low = free < LOW_SPACE_BYTES
    findings.append(
        Finding(
            check="disk space",
            status="warning" if low else "ok",
            message=f"{free / 2**20:.0f} MiB free on {probe}",
            hint="free some space: a run stores outputs, logs and notebooks" if low else None,
        )
    )
    return findings


def check_project(
    *,
    db_url: str,
    artifacts_root: Path | None,
    state_dir: Path,
    sample: int = 50,
    progress: Progress | None = None,
) -> ProjectReport:
    """Check a project's stores without writing anything.

    Args:
        db_url: the metadata store's URL.
        artifacts_root: the local artifact store folder (None for a remote store: not checked).
        state_dir: the project's ``.cellpipe`` folder (permissions and free space).
        sample: how many artifacts to re-hash (spread over the store).
        progress: called as artifacts are verified.
    """
    findings, damaged = _database_findings(db_url)
    if artifacts_root is not None:
        findings += _artifact_findings(artifacts_root, sample=sample, progress=progress)
    findings += _space_findings(state_dir)
    return ProjectReport(
        database=sqlite_path(db_url) or db_url,
        artifacts=str(artifacts_root) if artifacts_root is not None else "(remote)",
        findings=tuple(findings),
        damaged_database=damaged,
    )


# -- repair -----------------------------------------------------------------------------------


def _move_aside(path: Path, now: datetime) -> Path:
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    path.rename(target)
    for suffix in ("-wal", "-shm", "-journal"):  # they belong to the damaged file
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return target


def _started_at(run_id: str, folder: Path) -> datetime:
    parts = run_id.rsplit("-", 3)
    if len(parts) == 4:
        try:
            return datetime.strptime(f"{parts[1]}-{parts[2]}", "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.fromtimestamp(folder.stat().st_mtime, UTC)


def _pipeline_of(run_id: str) -> str:
    parts = run_id.rsplit("-", 3)
    return parts[0] if len(parts) == 4 else run_id


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _parameters(run_notebook: Any) -> dict[str, Any]:
    """The ``NAME = literal`` lines of the executed notebook's injected-parameters cell."""
    for cell in run_notebook.get("cells", []):
        if "injected-parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        values: dict[str, Any] = {}
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return {}
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                try:
                    values[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    continue
        return values
    return {}


def _artifact_ref(data: Any, exists: Callable[[str], bool]) -> ArtifactRef | None:
    try:
        ref = ArtifactRef.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None
    return ref if exists(ref.digest) else None


def _rebuild_run(
    folder: Path,
    metadata: Any,
    artifacts: Any,
) -> tuple[int, list[str]]:
    """Insert one run and its step runs; return how many step runs and what was skipped."""
    run_id = folder.name
    notes: list[str] = []
    run_nb_path = folder / "run.ipynb"
    run_nb: Any = {}
    if run_nb_path.is_file():
        try:
            run_nb = _read_json(run_nb_path)
        except (OSError, ValueError):
            notes.append(f"{run_id}: run.ipynb unreadable, parameters not recovered")
    info = run_nb.get("metadata", {}).get("cellpipe", {}) if isinstance(run_nb, dict) else {}
    results: list[tuple[dict[str, Any], Path]] = []
    steps_dir = folder / "steps"
    if steps_dir.is_dir():
        for step_dir in sorted(p for p in steps_dir.iterdir() if p.is_dir()):
            result_file = step_dir / "result.json"
            if not result_file.is_file():
                continue
            try:
                result = _read_json(result_file)
            except (OSError, ValueError):
                notes.append(f"{run_id}/{step_dir.name}: result.json unreadable")
                continue
            if isinstance(result, dict) and result.get("step"):
                results.append((result, result_file))
    if not results and not info:
        return 0, [f"{run_id}: no run notebook and no step results"]
    statuses = [str(r.get("status")) for r, _ in results]
    if any(s == StepStatus.FAILED for s in statuses):
        status = RunStatus.FAILED
    elif statuses and all(s == StepStatus.SUCCEEDED for s in statuses):
        status = RunStatus.SUCCEEDED
    else:
        status = RunStatus.INTERRUPTED
    started = _started_at(run_id, folder)
    finished = max(
        (datetime.fromtimestamp(p.stat().st_mtime, UTC) for _, p in results), default=started
    )
    metrics: dict[str, Any] = {}
    for result, _ in results:
        metrics.update(result.get("pipeline_metrics") or {})
    failed = [f"{r['step']}: {r.get('error')}" for r, _ in results if r.get("status") == "failed"]
    metadata.start_run(
        RunRecord(
            run_id=run_id,
            pipeline=_pipeline_of(run_id),
            notebook=str(info.get("notebook") or ""),
            notebook_digest="",
            status=RunStatus.RUNNING,
            started_at=started,
            parameters=_parameters(run_nb) if isinstance(run_nb, dict) else {},
        )
    )

    def exists(digest: str) -> bool:
        return bool(artifacts.exists(digest))

    count = 0
    for result, result_file in results:
        outputs = {}
        for name, data in (result.get("outputs") or {}).items():
            ref = _artifact_ref(data, exists)
            if ref is None:
                notes.append(f"{run_id}/{result['step']}: output '{name}' is not in the store")
                continue
            outputs[name] = ref
        step_metrics: dict[str, Any] = dict(result.get("pipeline_metrics") or {})
        for name, value in (result.get("metrics") or {}).items():
            step_metrics[f"log:{name}"] = value
        try:
            step_status = StepStatus(str(result.get("status")))
        except ValueError:
            notes.append(f"{run_id}/{result['step']}: unknown status {result.get('status')!r}")
            continue
        error = result.get("error")
        if result.get("traceback"):
            error = f"{error}\n{result['traceback']}" if error else result["traceback"]
        finished_at = datetime.fromtimestamp(result_file.stat().st_mtime, UTC)
        duration = result.get("duration_s")
        started_at = (
            finished_at - timedelta(seconds=float(duration))
            if isinstance(duration, int | float) and duration >= 0
            else None
        )
        metadata.record_step_run(
            StepRunRecord(
                run_id=run_id,
                step=str(result["step"]),
                status=step_status,
                cache_reason="rebuilt by cellpipe doctor --repair (cache key not recovered)",
                started_at=started_at,
                finished_at=finished_at,
                outputs=outputs,
                metrics=step_metrics,
                log_digest=_stored(artifacts, result.get("log_path")),
                notebook_digest=_stored(artifacts, result.get("notebook_path")),
                error=error if step_status is StepStatus.FAILED else None,
            )
        )
        count += 1
    metadata.finish_run(
        run_id,
        status=status,
        finished_at=finished,
        metrics=metrics,
        error="; ".join(failed) if failed else None,
    )
    return count, notes


def _stored(artifacts: Any, path: object) -> Any:
    """The digest of a log or executed notebook that is still on disk (stored again: idempotent)."""
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    try:
        return artifacts.put_file(Path(path))
    except (OSError, StorageError):
        return None


def repair_project(
    *,
    db_url: str,
    state_dir: Path,
    artifacts: Any,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> RepairReport:
    """Move a damaged SQLite database aside, start a new one and rebuild what the runs prove.

    A healthy database is left alone (nothing to repair).

    Args:
        db_url: the metadata store's URL (only SQLite files can be repaired).
        state_dir: the project's ``.cellpipe`` folder (run folders are in ``runs/``).
        artifacts: the project's artifact store (outputs are kept only when present there).
        progress: called per run folder.
        now: the time in the damaged file's new name (default: now).

    Raises:
        StorageError: if the database is not a SQLite file, or the folder is not writable.
    """
    from cellpipe.storage.metadata import SqlMetadataStore

    path_text = sqlite_path(db_url)
    if path_text is None:
        raise StorageError(
            f"cellpipe doctor --repair rebuilds SQLite files only, not {db_url.split('@')[-1]}",
            hint="restore a server database from its backups",
        )
    path = Path(path_text)
    _, damaged = _database_findings(db_url)
    if path.exists() and not damaged:
        return RepairReport(
            moved_to=None,
            not_recovered=(),
            message=f"{path} is healthy: nothing to repair",
        )
    moved = _move_aside(path, now or datetime.now(UTC)) if path.exists() else None
    metadata = SqlMetadataStore(db_url)
    runs: list[str] = []
    notes: list[str] = []
    skipped: list[str] = []
    steps = 0
    try:
        runs_dir = state_dir / "runs"
        folders = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
        for i, folder in enumerate(folders):
            if progress is not None:
                progress("rebuilding runs", i, len(folders))
            try:
                count, run_notes = _rebuild_run(folder, metadata, artifacts)
            except (CellpipeError, OSError, ValueError, KeyError, TypeError) as exc:
                skipped.append(f"{folder.name}: {exc}")
                continue
            notes += run_notes
            if count or not run_notes:
                runs.append(folder.name)
                steps += count
            else:
                skipped += run_notes
        if progress is not None:
            progress("rebuilding runs", len(folders), len(folders))
    finally:
        metadata.close()
    where = f"moved the damaged database to {moved}" if moved else f"created {path}"
    return RepairReport(
        moved_to=str(moved) if moved else None,
        runs_rebuilt=tuple(runs),
        step_runs_rebuilt=steps,
        skipped=tuple(skipped),
        message=f"{where}; rebuilt {len(runs)} run(s) with {steps} step run(s) from "
        f"{state_dir / 'runs'}",
        notes=tuple(n for n in notes if n not in skipped),
    )
