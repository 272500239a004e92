"""The code that runs inside a step process: load inputs, run the cells, store the outputs.

Owns: `warm_up` (a fresh ``__main__`` namespace with the parameters bound and the imports and
functions cells executed, done once per run by the fork server and once per step by the spawn
executor), `run_job` (one step in that namespace, with its output captured into an executed
notebook and its log), and the ``python -m cellpipe.runner.child JOB.json`` entry point used
by the spawn executor.

Invariants:
    * a step sees the imports and functions cells, the parameters and exactly its declared
      inputs; any other name is a ``NameError`` pointing at the user's cell and line;
    * each cell is compiled with the file name ``<notebook> [cell N]`` and registered in
      ``linecache``, so tracebacks name the notebook cell and show the user's line; frames of
      cellpipe itself are removed from the traceback the user sees;
    * the step's stdout and stderr (Python level and file descriptor level) are appended to its
      log file as they happen; rich outputs, the last expression's value and matplotlib figures
      are collected per cell into an nbformat v4 notebook;
    * every workspace file opened for reading is recorded (an audit hook on ``open``), except
      the ``.cellpipe`` folder, the Python installation and anything outside the workspace;
    * the artifact store is opened from the job's location (`open_job_store`) at most once per
      process: a fork server opens a local store once for all its children and only imports
      a remote store's packages, because fsspec file systems must not cross a fork; outputs
      are written to the store's scratch folder and handed over with ``put_file(move=True)``;
    * user errors never escape `run_job`: they become a failed `StepResult`. Ctrl-C does.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import json
import linecache
import os
import random
import shutil
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellpipe.errors import CellpipeError, SerializationError, StorageError
from cellpipe.pipeline.model import RANDOM_STATE, CodeChunk, JsonValue
from cellpipe.runner._capture import (
    NotebookBuilder,
    TeeStream,
    capturing,
    get_shell,
    shell_created,
)
from cellpipe.runner._classes import (
    ClassRegistrar,
    install_lazy_definitions,
    pin_preamble_classes,
    step_classes,
)
from cellpipe.runner._guard import GUARD_ENV, Fingerprints, guard_enabled
from cellpipe.runner._rng import capture_random_state, restore_random_state
from cellpipe.runner.context import StepContext, activate
from cellpipe.runner.jobs import (
    EXIT_RESULT_UNWRITABLE_FAILED,
    EXIT_RESULT_UNWRITABLE_OK,
    EXTRA_VALUES_MAX_ENV,
    MPL_BACKEND,
    ExtraValues,
    StepJob,
    StepResult,
)
from cellpipe.storage.artifacts import LocalArtifactStore
from cellpipe.storage.backends import preload_artifact_backend
from cellpipe.storage.metric_values import MetricValueError, metric_json
from cellpipe.storage.os_errors import FULL_ERRNOS, READ_ONLY_ERRNOS, storage_error_for
from cellpipe.storage.records import ArtifactRef, StepStatus
from cellpipe.storage.serializers import deserialize, serialize, type_name

if TYPE_CHECKING:
    from cellpipe.storage.remote import FsspecArtifactStore

__all__ = [
    "WarmState",
    "extra_values_pending",
    "imported_modules",
    "main",
    "open_job_store",
    "preload_serializers",
    "run_job",
    "store_extra_values",
    "warm_up",
]

# Frames from files under this folder are cellpipe's own; they are hidden from tracebacks.
_CELLPIPE_DIR = str(Path(__file__).resolve().parents[1]) + os.sep


# -- modules imported ------------------------------------------------------------------------

# Top-level modules present before any user code ran (cellpipe's own machinery), and those
# cellpipe imported for its own needs since (serializers, a shell built on first use): what
# remains of ``sys.modules`` is what the notebook's code imported, directly or not.
_baseline: frozenset[str] = frozenset()
_machinery: set[str] = set()


def _top_level_modules() -> set[str]:
    return {name.partition(".")[0] for name in list(sys.modules)}


def imported_modules() -> list[str]:
    """Return the third-party top-level modules the notebook's code has imported so far.

    Indirect imports count (``load_wine(as_frame=True)`` imports pandas): they are what a pod
    running the step needs installed. The standard library and cellpipe's own imports do not.
    """
    found = _top_level_modules() - _baseline - _machinery
    return sorted(
        m
        for m in found
        if m not in sys.stdlib_module_names
        and not m.startswith("_")
        # loaded from a file: not a pseudo-module such as Cython's ``cython_runtime``
        and getattr(sys.modules.get(m), "__file__", None) is not None
    )


# -- files read and written ------------------------------------------------------------------

_opened: list[str] | None = None
_written: list[str] | None = None
_hook_installed = False
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Called for every audited event in the process: keep the common path to one comparison.
    if event != "open" or _opened is None:
        return
    path, mode, flags = args
    if isinstance(path, int) or path is None:
        return
    if mode is not None:
        reads = "r" in mode and "+" not in mode
        writes = "w" in mode or "a" in mode or "x" in mode or "+" in mode
    elif flags is not None:
        writes = bool(flags & _WRITE_FLAGS)
        reads = flags & os.O_ACCMODE == os.O_RDONLY and not writes
    else:
        return
    if not reads and (not writes or _written is None):
        return
    text = os.fsdecode(path)
    # os.path, not pathlib: this runs for every file the process opens.
    if not os.path.isabs(text):  # noqa: PTH117
        text = os.path.join(os.getcwd(), text)  # noqa: PTH109, PTH118
    if reads:
        _opened.append(text)
    elif _written is not None:
        _written.append(text)


@contextmanager
def _recording_opens(written: list[str] | None = None) -> Iterator[list[str]]:
    """Record the files opened for reading (and, into ``written``, for writing)."""
    global _opened, _written, _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)  # audit hooks cannot be removed; it is idle outside a step
        _hook_installed = True
    previous = _opened, _written
    opened: list[str] = []
    _opened, _written = opened, written
    try:
        yield opened
    finally:
        _opened, _written = previous


def _in_workspace(opened: list[str], workdir: str) -> list[str]:
    """Keep the distinct paths that lie in the workspace (a string test, no file access).

    The preamble opens thousands of files while it imports (bytecode, shared libraries,
    data files of the installed packages); this drops them once per warm-up instead of
    filtering them again in every step.
    """
    root = os.path.normpath(Path(workdir).absolute())
    prefix = root.rstrip(os.sep) + os.sep
    kept: list[str] = []
    for raw in set(opened):
        path = os.path.normpath(raw)
        if path == root or path.startswith(prefix):
            kept.append(path)
    return kept


def _workspace_files(opened: list[str], job: StepJob) -> tuple[str, ...]:
    """Keep the existing workspace files (relative, sorted), outside cellpipe's own folders."""
    root = Path(job.workdir).absolute()
    excluded = [
        root / ".cellpipe",
        Path(job.scratch_dir).absolute(),
        Path(sys.prefix).absolute(),
        Path(sys.base_prefix).absolute(),
        Path(sys.exec_prefix).absolute(),
    ]
    if job.artifact_cache:
        excluded.append(Path(job.artifact_cache).absolute())
    if not job.artifacts.remote:
        excluded.append(Path(job.artifact_root.removeprefix("file://")).absolute())
    found: set[str] = set()
    for raw in set(opened):
        path = Path(os.path.normpath(raw))
        if not path.is_relative_to(root):
            continue
        if any(path.is_relative_to(ex) for ex in excluded):
            continue
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or not path.is_file():
            continue
        found.add(rel.as_posix())
    return tuple(sorted(found))


# -- the artifact store ----------------------------------------------------------------------

_stores: dict[str, tuple[int, LocalArtifactStore | FsspecArtifactStore]] = {}


def open_job_store(job: StepJob) -> LocalArtifactStore | FsspecArtifactStore:
    """Return the job's artifact store, opened at most once per process.

    A local store opened before a fork is reused by the forked children (it holds only
    paths); a remote store is opened again in each process, because an fsspec file system
    belongs to the process that created it (its event loop thread does not survive a fork).

    Args:
        job: the job whose store to open.

    Raises:
        StorageError: when the store cannot be opened (unknown scheme, missing package).
    """
    location = job.artifacts
    key = json.dumps(
        [location.url, location.cache_dir, dict(location.storage_options)],
        sort_keys=True,
        default=repr,
    )
    found = _stores.get(key)
    if found is not None:
        pid, store = found
        if pid == os.getpid() or isinstance(store, LocalArtifactStore):
            return store
    store = location.open()
    _stores[key] = (os.getpid(), store)
    return store


def _warm_store(job: StepJob) -> None:
    """Open a local store, or import a remote store's packages, before steps are forked."""
    try:
        if job.artifacts.remote:
            preload_artifact_backend(job.artifact_root)
        else:
            open_job_store(job)
    except CellpipeError:
        pass  # each step reports it when it opens the store itself


def preload_serializers() -> None:
    """Import what the storage formats of the preamble's libraries need, before forking.

    A DataFrame is stored as Parquet: with pandas imported, ``pyarrow.parquet`` (about 20 ms,
    no thread started) is imported once by the fork server instead of by every step that
    loads or stores a DataFrame.
    """
    before = _top_level_modules()
    try:
        _preload_formats()
    finally:
        _machinery.update(_top_level_modules() - before)


def _preload_formats() -> None:
    if "pandas" in sys.modules:
        with contextlib.suppress(ImportError):
            import pyarrow.pandas_compat  # the first DataFrame conversion imports it
            import pyarrow.parquet  # noqa: F401


# -- running cells ---------------------------------------------------------------------------


def _cell_filename(notebook: str, cell: int) -> str:
    return f"{Path(notebook).name} [cell {cell}]"


def _ends_with_semicolon(code: str) -> bool:
    for line in reversed(code.splitlines()):
        stripped = line.split("#", 1)[0].rstrip()
        if stripped:
            return stripped.endswith(";")
    return False


def _run_cell(
    chunk: CodeChunk, filename: str, namespace: dict[str, Any], builder: NotebookBuilder, count: int
) -> None:
    """Execute one cell like Jupyter: statements, then the last expression's value shown."""
    code = chunk.python
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    tree = ast.parse(code, filename=filename)
    last: ast.Expression | None = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not _ends_with_semicolon(code):
        last = ast.Expression(tree.body[-1].value)
        tree.body.pop()
    exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        value = eval(compile(last, filename, "eval"), namespace)
        if value is not None:
            data, metadata = _main_shell().display_formatter.format(value)
            builder.display(data, metadata, execution_count=count)


def _flush_figures() -> None:
    """Show the open figures; a figure that cannot be rendered is a warning, never an error."""
    if "matplotlib.pyplot" in sys.modules:
        try:
            from cellpipe.runner._mpl_backend import flush_figures

            flush_figures()
        except Exception as exc:
            sys.stderr.write(
                f"[cellpipe] warning: figures could not be rendered: {type(exc).__name__}: {exc}\n"
            )


@dataclass(slots=True, kw_only=True)
class _Failure:
    """A step error as the user should see it."""

    message: str
    traceback: str = ""
    ename: str = ""
    evalue: str = ""
    hint: str | None = None


def _strip_internal(exc: traceback.TracebackException, seen: set[int]) -> None:
    if id(exc) in seen:
        return
    seen.add(id(exc))
    kept = [f for f in exc.stack if not f.filename.startswith(_CELLPIPE_DIR)]
    exc.stack = traceback.StackSummary.from_list(kept)
    for chained in (exc.__cause__, exc.__context__):
        if chained is not None:
            _strip_internal(chained, seen)


def _user_traceback(exc: BaseException) -> str:
    summary = traceback.TracebackException.from_exception(exc)
    _strip_internal(summary, set())
    return "".join(summary.format())


def _describe(exc: BaseException, cells: Mapping[str, int], notebook: str) -> _Failure:
    """Turn a user exception into a message naming the notebook cell and line."""
    where: tuple[int, int | None] | None = None
    if isinstance(exc, SyntaxError) and exc.filename is not None and exc.filename in cells:
        where = (cells[exc.filename], exc.lineno)
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        if filename in cells:
            where = (cells[filename], lineno)
    evalue = str(exc)
    if isinstance(exc, SyntaxError):
        evalue = exc.msg
    elif isinstance(exc, SystemExit):
        evalue = f"the step called sys.exit({exc.code!r})"
    elif isinstance(exc, CellpipeError):
        evalue = exc.message  # its hint goes in `hint`, not into the headline too
    headline = f"{type(exc).__name__}: {evalue}" if evalue else type(exc).__name__
    if where is not None:
        cell, line = where
        place = f"{Path(notebook).name}, cell {cell}" + (f", line {line}" if line else "")
        headline += f" ({place})"
    return _Failure(
        message=headline,
        traceback=_user_traceback(exc),
        ename=type(exc).__name__,
        evalue=evalue,
        hint=exc.hint if isinstance(exc, CellpipeError) else None,
    )


# -- the warm namespace ----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class WarmState:
    """A namespace in which the imports and functions cells have run.

    Attributes:
        key: the `StepJob.setup_key` it was made for.
        module: the ``__main__`` module whose dict is the namespace.
        cells: the preamble's executed cells (with outputs), copied into every step notebook.
        failure: the preamble's error, if it raised; every step then fails with it.
        files_read: absolute paths of files in the workspace the preamble opened for reading
            (other files it opened are dropped when it ends).
        execution_count: the last execution count used.
        random_state: Python's ``random`` state after the preamble: a forked child gets it
            back (``random`` reseeds itself in every fork child, which would lose a
            ``random.seed`` of the imports cell).
        seconds: how long the preamble took (its imports, mostly). Every step run on this
            state counts it in its duration: the step's process paid for it, or the warm
            server did once for the steps it forks.
    """

    key: str
    module: types.ModuleType
    cells: list[dict[str, Any]] = field(default_factory=list)
    failure: _Failure | None = None
    files_read: list[str] = field(default_factory=list)
    execution_count: int = 0
    random_state: Any = None
    seconds: float = 0.0


def _main_shell() -> Any:
    """Return the shell, bound to the current ``__main__`` namespace (built on first use)."""
    main = sys.modules["__main__"]
    before = None if shell_created() else _top_level_modules()
    shell = get_shell()
    if before is not None:  # IPython's own imports are not the notebook's
        _machinery.update(_top_level_modules() - before)
    sys.modules["__main__"] = main  # building the shell installs a module of its own there
    if shell.user_module is not main:
        shell.user_module = main
        shell.user_ns = main.__dict__
    return shell


def _lazy_get_ipython() -> Any:
    """``get_ipython()`` of a process that started without a shell: builds it now."""
    return _main_shell()


def _lazy_display(*objs: Any, **kwargs: Any) -> None:
    """``display()`` of a process that started without a shell: builds it now."""
    _main_shell()  # installs IPython's own display in builtins
    from IPython.display import display

    display(*objs, **kwargs)  # type: ignore[no-untyped-call]


def _fresh_main() -> types.ModuleType:
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    return module


def _bind(namespace: dict[str, Any], params: Mapping[str, JsonValue]) -> None:
    # A JSON round trip gives every step its own copy, whatever earlier code did to the values.
    namespace.update(json.loads(json.dumps(dict(params))))


def warm_up(job: StepJob, *, log_fd: int) -> WarmState:
    """Run the imports and functions cells in a fresh ``__main__`` namespace.

    The shell is configured and ``sys.modules["__main__"]`` is replaced by the new module, so
    classes and functions the notebook defines belong to ``__main__`` (as in Jupyter, and so
    cloudpickle stores them by value).

    Args:
        job: any job of the run (its preamble, parameters and working directory are used).
        log_fd: where the preamble's printed output goes.

    The IPython shell is built now when ``job.shell`` says the code needs it (or it exists
    already); otherwise ``get_ipython`` and ``display`` build it on first call.

    Returns:
        The warm state; its ``failure`` is set when a preamble cell raised.
    """
    global _baseline
    begin = time.perf_counter()  # a step's duration counts its imports (`WarmState.seconds`)
    module = _fresh_main()
    namespace = module.__dict__
    sys.modules["__main__"] = module
    if job.shell or shell_created():
        namespace["get_ipython"] = _main_shell().get_ipython
    else:
        namespace["get_ipython"] = _lazy_get_ipython
        if not hasattr(builtins, "display"):
            builtins.display = _lazy_display  # type: ignore[attr-defined]
    _baseline = frozenset(_top_level_modules())
    state = WarmState(key=job.setup_key(), module=module)
    _warm_store(job)
    _bind(namespace, job.params)
    builder = NotebookBuilder()
    names = {_cell_filename(job.notebook, c.cell): c.cell for c in job.preamble}
    saved = sys.stdout, sys.stderr
    sys.stdout = TeeStream("stdout", log_fd, None)
    sys.stderr = TeeStream("stderr", log_fd, None)
    try:
        with capturing(builder), _recording_opens() as opened:
            for chunk in job.preamble:
                state.execution_count += 1
                builder.add_cell(
                    cell_id=f"cell-{chunk.cell}",
                    source=chunk.source,
                    execution_count=state.execution_count,
                    metadata={"cellpipe": {"cell": chunk.cell, "role": "preamble"}},
                )
                try:
                    filename = _cell_filename(job.notebook, chunk.cell)
                    _run_cell(chunk, filename, namespace, builder, state.execution_count)
                except (Exception, SystemExit) as exc:
                    state.failure = _describe(exc, names, job.notebook)
                    builder.error(
                        state.failure.ename, state.failure.evalue, state.failure.traceback
                    )
                    break
                finally:
                    _flush_figures()
        state.files_read = _in_workspace(opened, job.workdir)
    finally:
        sys.stdout, sys.stderr = saved
    state.cells = builder.cells
    state.random_state = random.getstate()
    if state.failure is None:
        before = _top_level_modules()
        try:
            pin_preamble_classes(namespace, (c.python for c in job.preamble))
        finally:
            _machinery.update(_top_level_modules() - before)
    state.seconds = time.perf_counter() - begin
    return state


# -- one step --------------------------------------------------------------------------------


def _pipeline_metrics(
    job: StepJob, namespace: Mapping[str, Any], *, succeeded: bool
) -> tuple[dict[str, JsonValue], list[str]]:
    """Return the values of the job's metric names as JSON, and a warning per value left out.

    A value without a JSON form is never dropped silently: the warning names the metric, the
    step, why, and the fix. A name the step did not bind is only worth a warning when the
    step succeeded (a failed step's run has failed anyway).
    """
    values: dict[str, JsonValue] = {}
    warnings: list[str] = []
    for name in job.metrics:
        if name not in namespace:
            if succeeded:
                warnings.append(
                    f"cellpipe warning: metric '{name}' was not recorded: step '{job.step}' "
                    "did not assign it (bind it in every branch of the step)"
                )
            continue
        try:
            values[name] = metric_json(name, namespace[name])
        except MetricValueError as exc:
            warnings.append(
                f"cellpipe warning: metric '{name}' of step '{job.step}' was not recorded: "
                f"{exc}; name a number, string, list, dict, numpy array or pandas "
                "Series/DataFrame in the pipeline-metrics cell (for example a derived "
                "number or `.tolist()`)"
            )
    return values, warnings


def _load_inputs(
    job: StepJob, namespace: dict[str, Any], store: LocalArtifactStore | FsspecArtifactStore
) -> None:
    """Bind the step's inputs; restore the random generators from `RANDOM_STATE` if given.

    Classes of the notebook that come back by value are bound in ``__main__`` (see
    `cellpipe.runner._classes`), so a later ``pickle.dump`` finds them as in Jupyter.
    """
    registrar = ClassRegistrar()
    registrar.start()
    for name, ref in job.inputs.items():
        try:
            value = deserialize(ref.serializer, store.local_path(ref.digest))
        except CellpipeError as exc:
            raise type(exc)(
                f"step '{job.step}' cannot load its input '{name}': {exc.message}", hint=exc.hint
            ) from exc
        if name == RANDOM_STATE:
            try:
                restore_random_state(value)
            except (ValueError, TypeError, ImportError) as exc:
                raise SerializationError(
                    f"step '{job.step}' cannot restore the global random state from its input "
                    f"'{RANDOM_STATE}': {exc}",
                    hint="re-run the step that wrote it (cellpipe run --from STEP --no-cache)",
                ) from exc
            continue  # never bound in the user's namespace
        namespace[name] = value
    registrar.finish(namespace)


def _changed_in_place(job: StepJob, changed: list[str]) -> CellpipeError:
    """The error of a step that changed guarded inputs without the analysis seeing it."""
    name = changed[0]
    names = ", ".join(f"'{n}'" for n in changed)
    noun = "it" if len(changed) == 1 else "them"
    return CellpipeError(
        f"step '{job.step}' changed {names} in place, but cellpipe did not see the change "
        f"statically, so later steps would get the old value (in Jupyter they see the change)",
        hint=f"end the step with `{name} = {name}` so cellpipe knows it changes {noun}, or "
        f"work on a copy (`{name} = {name}.copy()`); set {GUARD_ENV}=0 to switch this "
        "check off",
    )


def _save_outputs(
    job: StepJob, namespace: dict[str, Any], store: LocalArtifactStore | FsspecArtifactStore
) -> dict[str, ArtifactRef]:
    refs: dict[str, ArtifactRef] = {}
    for name in job.outputs:
        if name not in namespace and name != RANDOM_STATE:
            raise _MissingOutputError(
                f"step '{job.step}' finished without defining '{name}', which it must output",
                hint=f"assign '{name}' in the step's cells on every path through the code",
            )
        value = capture_random_state() if name == RANDOM_STATE else namespace[name]
        serializer, path = serialize(value, store.scratch_dir(), variable=name, step=job.step)
        size = path.stat().st_size
        try:
            digest = store.put_file(path, move=True)
        except CellpipeError as exc:
            path.unlink(missing_ok=True)
            raise type(exc)(
                f"step '{job.step}' cannot store its output '{name}': {exc.message}",
                hint=exc.hint,
            ) from exc
        refs[name] = ArtifactRef(
            digest=digest,
            serializer=serializer.name,
            serializer_version=serializer.version,
            size=size,
            type_name=type_name(value),
        )
    return refs


def _definitions_loader(
    job: StepJob, store: LocalArtifactStore | FsspecArtifactStore | None
) -> Callable[[], list[Mapping[str, type]]]:
    def load() -> list[Mapping[str, type]]:
        found: list[Mapping[str, type]] = []
        if store is None:
            return found
        for ref in job.definitions:
            try:
                value = deserialize(ref.serializer, store.local_path(ref.digest))
            except CellpipeError:
                continue  # the class stays unknown, as it would be without this
            if isinstance(value, dict):
                found.append(value)
        return found

    return load


def _save_definitions(
    job: StepJob,
    classes: Mapping[str, type],
    store: LocalArtifactStore | FsspecArtifactStore,
) -> ArtifactRef | None:
    """Store the classes the step defined, for the steps after it (never fails the step)."""
    if not classes:
        return None
    try:
        serializer, path = serialize(
            dict(classes), store.scratch_dir(), variable="classes", step=job.step
        )
        size = path.stat().st_size
        digest = store.put_file(path, move=True)
    except (CellpipeError, OSError) as exc:
        sys.stderr.write(
            f"[cellpipe] warning: the classes of step '{job.step}' "
            f"({', '.join(sorted(classes))}) cannot be stored for later steps: {exc}\n"
        )
        return None
    return ArtifactRef(
        digest=digest,
        serializer=serializer.name,
        serializer_version=serializer.version,
        size=size,
        type_name="dict",
    )


class _MissingOutputError(CellpipeError):
    """A declared output variable does not exist when the step ends."""


def _cellpipe_failure(exc: CellpipeError) -> _Failure:
    return _Failure(
        message=exc.message,
        traceback=f"{type(exc).__name__}: {exc}\n",
        ename=type(exc).__name__,
        evalue=exc.message,
        hint=exc.hint,
    )


def _parameters_cell(params: Mapping[str, JsonValue]) -> str:
    lines = ["# Parameters (set by cellpipe as values for this run)"]
    lines.extend(f"{name} = {value!r}" for name, value in params.items())
    return "\n".join(lines)


@contextmanager
def _captured_streams(log_fd: int, *, own_process: bool) -> Iterator[None]:
    """Send stdout and stderr (and, in a step process, fds 1 and 2) to the log file."""
    saved = sys.stdout, sys.stderr
    if own_process:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
    sys.stdout = TeeStream("stdout", log_fd, 1 if own_process else None)
    sys.stderr = TeeStream("stderr", log_fd, 2 if own_process else None)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def run_job(job: StepJob, warm: WarmState, *, own_process: bool) -> StepResult:
    """Run one step in the warm namespace and return its result.

    Args:
        job: the step to run.
        warm: the namespace after the imports and functions cells (from `warm_up`); it is
            used directly, so a caller that needs it again must pass a fork's copy.
        own_process: True in a step process (file descriptors 1 and 2 are redirected to the
            log too); False in the in-process executor.

    Returns:
        The result; user errors are reported in it, never raised.

    Raises:
        KeyboardInterrupt: Ctrl-C is never swallowed.
    """
    # The step's clock started before its imports: the preamble's time counts too.
    start = time.perf_counter() - warm.seconds
    Path(job.scratch_dir).mkdir(parents=True, exist_ok=True)
    log_fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    builder = NotebookBuilder()
    for cell in warm.cells:
        builder.add_cell(
            cell_id=cell["id"],
            source=cell["source"],
            execution_count=cell["execution_count"],
            metadata=cell["metadata"],
            outputs=json.loads(json.dumps(cell["outputs"])),
        )
    if job.params:
        builder.add_cell(
            cell_id="injected-parameters",
            source=_parameters_cell(job.params),
            execution_count=None,
            metadata={"tags": ["injected-parameters"]},
        )
    namespace = warm.module.__dict__
    if warm.random_state is not None:
        random.setstate(warm.random_state)  # as the preamble left it, also in a fork child
    names = {_cell_filename(job.notebook, c.cell): c.cell for c in (*job.preamble, *job.cells)}
    failure = warm.failure
    store: LocalArtifactStore | FsspecArtifactStore | None = None
    if failure is None:
        try:
            store = open_job_store(job)
        except CellpipeError as exc:
            failure = _cellpipe_failure(exc)
    early_failure = failure  # the preamble's or the store's: shown in the log as it is
    context = StepContext(
        step=job.step,
        run_id=job.run_id,
        notebook=job.notebook,
        workdir=job.workdir,
        artifact_root=job.artifact_root,
        scratch_dir=job.scratch_dir,
        artifacts=store,
        offline=job.offline,
    )
    outputs: dict[str, ArtifactRef] = {}
    opened: list[str] = []
    written: list[str] = []
    imported: list[str] = []
    guard: Fingerprints | None = None
    count = warm.execution_count
    definitions: ArtifactRef | None = None
    before: set[str] = set()
    try:
        with (
            _captured_streams(log_fd, own_process=own_process),
            capturing(builder),
            activate(context),
            _recording_opens(written) as opened,
        ):
            pending = list(job.cells)
            if failure is None and store is not None:
                _bind(namespace, job.params)
                try:
                    _load_inputs(job, namespace, store)
                    if job.guarded and guard_enabled():
                        guard = Fingerprints(namespace, job.guarded)
                except CellpipeError as exc:
                    failure = _cellpipe_failure(exc)
                if job.definitions:
                    install_lazy_definitions(namespace, _definitions_loader(job, store))
            before = set(namespace)
            while pending and failure is None:
                chunk = pending.pop(0)
                count += 1
                builder.add_cell(
                    cell_id=f"cell-{chunk.cell}",
                    source=chunk.source,
                    execution_count=count,
                    metadata={"cellpipe": {"cell": chunk.cell, "step": job.step}},
                )
                try:
                    _run_cell(
                        chunk, _cell_filename(job.notebook, chunk.cell), namespace, builder, count
                    )
                except (Exception, SystemExit) as exc:
                    failure = _describe(exc, names, job.notebook)
                    builder.error(failure.ename, failure.evalue, failure.traceback)
                    # The log gets the traceback too, without doubling it in the notebook.
                    os.write(log_fd, failure.traceback.encode("utf-8", "replace"))
                finally:
                    _flush_figures()
            imported = imported_modules()  # before storing outputs imports their formats
            if failure is None and guard is not None:
                changed = guard.changed(namespace)
                if changed:
                    guard_error = _changed_in_place(job, changed)
                    failure = _cellpipe_failure(guard_error)
                    sys.stderr.write(f"CellpipeError: {guard_error}\n")
            for chunk in pending:
                builder.add_cell(
                    cell_id=f"cell-{chunk.cell}",
                    source=chunk.source,
                    execution_count=None,
                    metadata={"cellpipe": {"cell": chunk.cell, "step": job.step}},
                )
            if failure is None and store is not None:
                try:
                    outputs = _save_outputs(job, namespace, store)
                except (_MissingOutputError, SerializationError, StorageError) as exc:
                    failure = _cellpipe_failure(exc)
                    sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
            if failure is None and store is not None:
                definitions = _save_definitions(job, step_classes(namespace, before), store)
                if job.extras:
                    global _pending_extras
                    _pending_extras = (job, namespace, store)
            if failure is not None and failure is early_failure:
                sys.stderr.write(failure.traceback)
    finally:
        os.close(log_fd)
    status = StepStatus.SUCCEEDED if failure is None else StepStatus.FAILED
    files_written = _workspace_files(written, job)
    notebook = builder.to_notebook(
        {
            "cellpipe": {
                "step": job.step,
                "run_id": job.run_id,
                "status": status.value,
                "imported": imported,
                # Read back for a cache hit of this step run (the file guard of the runner,
                # the classes later steps may need).
                "files_written": list(files_written),
                "definitions": None if definitions is None else definitions.to_json(),
            }
        }
    )
    notebook_path: str | None = str(job.notebook_path)
    try:
        job.notebook_path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    except OSError as exc:  # a full disk or a read-only folder: say so, keep the step's error
        full = storage_error_for(exc, job.notebook_path, action="write the executed notebook")
        if full is None:
            raise
        with contextlib.suppress(OSError):
            job.notebook_path.unlink(missing_ok=True)  # half-written
        notebook_path = None
        if failure is None:  # the step ran, but its record would be incomplete
            failure = _cellpipe_failure(full)
            status = StepStatus.FAILED
        with contextlib.suppress(OSError):
            sys.stderr.write(f"{type(full).__name__}: {full}\n")
    pipeline_metrics, metric_warnings = _pipeline_metrics(job, namespace, succeeded=failure is None)
    if metric_warnings:  # in the step's log, which the run's output shows as the step ends
        with Path(job.log_path).open("a", encoding="utf-8") as log:
            log.write("".join(f"{w}\n" for w in metric_warnings))
    return StepResult(
        step=job.step,
        status=status,
        outputs=outputs,
        metrics=context.metrics,
        pipeline_metrics=pipeline_metrics,
        error=None if failure is None else failure.message,
        traceback=None if failure is None else failure.traceback,
        hint=None if failure is None else failure.hint,
        notebook_path=notebook_path,
        log_path=str(job.log_path),
        files_read=_workspace_files([*warm.files_read, *opened], job),
        files_written=files_written,
        duration_s=time.perf_counter() - start,
        definitions=definitions,
    )


# -- values nothing downstream reads ---------------------------------------------------------

_pending_extras: tuple[StepJob, dict[str, Any], LocalArtifactStore | FsspecArtifactStore] | None = (
    None
)


def _not_a_value(value: Any) -> str | None:
    """Why ``value`` is code rather than a result (None when it is worth storing)."""
    if isinstance(value, types.ModuleType):
        return "a module"
    if isinstance(value, type):
        return "a class"
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return "a function"
    if type(value).__module__.partition(".")[0] in _PLOT_MODULES:
        # A figure or axes is shown in the executed notebook; its pickle is not stable from
        # run to run, so storing it would make every `reproduce` report a difference.
        return "a plot object"
    return None


_PLOT_MODULES = frozenset({"matplotlib", "seaborn"})


def _store_extra(
    job: StepJob, name: str, value: Any, store: LocalArtifactStore | FsspecArtifactStore
) -> ArtifactRef | str:
    """Store one extra value; return its reference, or why it was skipped."""
    try:
        serializer, path = serialize(value, store.scratch_dir(), variable=name, step=job.step)
    except Exception as exc:  # never fail the step for a value nothing reads
        detail = exc.message if isinstance(exc, CellpipeError) else f"{type(exc).__name__}: {exc}"
        lines = detail.splitlines() or [type(exc).__name__]
        return f"it cannot be serialized: {lines[0][:300]}"
    try:
        size = path.stat().st_size
        if size > job.extras_max_bytes:
            path.unlink(missing_ok=True)
            return (
                f"it takes {size} bytes, over the limit of {job.extras_max_bytes} bytes "
                f"(raise it with {EXTRA_VALUES_MAX_ENV})"
            )
        digest = store.put_file(path, move=True)
    except (CellpipeError, OSError) as exc:
        path.unlink(missing_ok=True)
        return f"it cannot be stored: {exc}"
    return ArtifactRef(
        digest=digest,
        serializer=serializer.name,
        serializer_version=serializer.version,
        size=size,
        type_name=type_name(value),
    )


def extra_values_pending() -> bool:
    """Whether the step just run left values to store (`store_extra_values`)."""
    return _pending_extras is not None


def store_extra_values() -> ExtraValues | None:
    """Store the values the step just run bound and nothing downstream reads.

    Called after the step's result was reported, so its dependants do not wait for this:
    it writes `StepJob.extras_path` (temp file + rename) and appends a note per skipped
    value to the step's log. Never raises for a value (modules, functions and classes are
    skipped; unserializable or too large values are skipped with a note).

    Returns:
        What was stored and skipped, or None when the last step run had nothing to store.
    """
    global _pending_extras
    pending, _pending_extras = _pending_extras, None
    if pending is None:
        return None
    job, namespace, store = pending
    outputs: dict[str, ArtifactRef] = {}
    skipped: dict[str, str] = {}
    for name in job.extras:
        if name not in namespace:
            continue  # bound on a path the step did not take
        value = namespace[name]
        if _not_a_value(value) is not None:
            continue  # code, not a result: the notebook defines it again
        found = _store_extra(job, name, value, store)
        if isinstance(found, str):
            skipped[name] = found
        else:
            outputs[name] = found
    extras = ExtraValues(outputs=outputs, skipped=skipped)
    with contextlib.suppress(OSError):
        if skipped:
            with job.log_path.open("a", encoding="utf-8") as log:
                for name, why in skipped.items():
                    log.write(
                        f"cellpipe note: '{name}' of step '{job.step}' was not stored for "
                        f"later loading: {why}\n"
                    )
        tmp = job.extras_path.with_name(job.extras_path.name + ".tmp")
        tmp.write_text(json.dumps(extras.to_json()))
        tmp.replace(job.extras_path)
    return extras


def prepare_process(workdir: str) -> None:
    """Make this process look like a Jupyter kernel started in ``workdir``.

    The working directory is the notebook's folder, it is first on ``sys.path`` (so local
    modules import), and matplotlib uses the capturing backend unless the user chose one.
    """
    os.chdir(workdir)
    if not sys.path or Path(sys.path[0] or ".").absolute() != Path(workdir).absolute():
        sys.path.insert(0, workdir)
    os.environ.setdefault("MPLBACKEND", MPL_BACKEND)


def write_result(result: StepResult, path: Path) -> None:
    """Write the result where the parent expects it (temp file + rename, never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(result.to_json()))
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def report_result(result: StepResult, path: Path) -> int:
    """Write the result and return the step process's exit code.

    0 when the result was written. When the disk is full or the folder read-only, the result
    cannot reach the parent as a file: the exit code says at least whether the step succeeded
    (`EXIT_RESULT_UNWRITABLE_OK`) or failed (`EXIT_RESULT_UNWRITABLE_FAILED`), and the step's
    own error goes to stderr (the log, if that can still be written). Other errors propagate.
    """
    try:
        write_result(result, path)
    except OSError as exc:
        if exc.errno not in FULL_ERRNOS | READ_ONLY_ERRNOS:
            raise
        with contextlib.suppress(OSError):
            os.write(2, f"cellpipe: cannot write the step's result {path}: {exc}\n".encode())
            if result.error:
                os.write(2, f"cellpipe: the step's own error: {result.error}\n".encode())
        if result.status is StepStatus.SUCCEEDED:
            return EXIT_RESULT_UNWRITABLE_OK
        return EXIT_RESULT_UNWRITABLE_FAILED
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one job in this fresh process: ``python -m cellpipe.runner.child JOB.json``.

    The result is written to the job's ``result_path``; the exit code is 0 whenever a result
    was written (even for a failed step).
    """
    args = sys.argv[1:] if argv is None else argv
    job = StepJob.from_json(json.loads(Path(args[0]).read_text()))
    prepare_process(job.workdir)
    Path(job.scratch_dir).mkdir(parents=True, exist_ok=True)
    log_fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        warm = warm_up(job, log_fd=log_fd)
    finally:
        os.close(log_fd)
    result = run_job(job, warm, own_process=True)
    code = report_result(result, job.result_path)
    if code == 0:
        store_extra_values()
    sys.stdout.flush()
    sys.stderr.flush()
    shutil.rmtree(Path(job.scratch_dir) / "tmp", ignore_errors=True)
    return code


if __name__ == "__main__":
    # Run the imported module's `main`, not this `__main__` copy's: the step replaces
    # sys.modules["__main__"] with its own namespace, and module state must live in one place.
    from cellpipe.runner import child as _child

    sys.exit(_child.main())
