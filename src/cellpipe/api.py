"""What ``import cellpipe`` offers inside a notebook: thin functions over the services.

Owns: the public Python API (`load_pipeline`, `run`, `load`, `log_metric`, `register_model`,
`load_model`) and the service functions the CLI calls too (`open_project`, `run_notebook`), so
the notebook, the CLI and the UI behave the same.

Invariants: nothing here runs on import; stores are opened per call and closed after it.

Must not depend on: cli, ui.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellpipe.config import Settings
from cellpipe.errors import RunNotFoundError, StorageError, UnknownStepError
from cellpipe.pipeline import Pipeline

if TYPE_CHECKING:
    from cellpipe.registry.model import ModelVersion
    from cellpipe.runner._bare import BareServer
    from cellpipe.runner.events import Event
    from cellpipe.runner.orchestrate import RunReport
    from cellpipe.storage.metadata import SqlMetadataStore
    from cellpipe.storage.protocols import ArtifactStore
    from cellpipe.storage.records import RunRecord, StepRunRecord
    from cellpipe.views.live import NotebookLiveView, StepRow, TextLiveView

    _LiveSink = NotebookLiveView | TextLiveView


def load_pipeline(path: str | Path) -> Pipeline:
    """Read a notebook (``.ipynb`` or percent script) and return its checked pipeline.

    Args:
        path: the notebook file.

    Returns:
        The validated pipeline.

    Raises:
        NotebookParseError: if the file cannot be read as a notebook.
        PipelineValidationError: with every definition problem found.
    """
    from cellpipe.notebook import load_pipeline as _load

    return _load(Path(path))


@dataclass(frozen=True, slots=True)
class Project:
    """A project's open stores (the ``.cellpipe`` folder beside a notebook).

    Attributes:
        settings: where the stores are.
        artifacts: the artifact store: a local folder or a remote (``s3://``) store.
        metadata: the metadata store (SQLite or PostgreSQL).
    """

    settings: Settings
    artifacts: ArtifactStore
    metadata: SqlMetadataStore


@contextmanager
def open_project(settings: Settings, *, create: bool = True) -> Iterator[Project]:
    """Open the project's artifact and metadata stores, and close them afterwards.

    The stores come from the backend table (`cellpipe.storage.backends`), by the URL
    schemes of ``settings.db_url`` and ``settings.artifacts_url``.

    Args:
        settings: where the stores are.
        create: create ``.cellpipe/`` when it does not exist yet (a first run).

    Raises:
        StorageError: when the project has neither a ``.cellpipe`` folder nor a
            ``cellpipe.toml`` and ``create`` is False; when a URL's scheme is unknown, its
            package is not installed or its store cannot be reached.
    """
    from cellpipe.config import CONFIG_FILE
    from cellpipe.storage.backends import open_artifact_store, open_metadata_store

    if (
        not create
        and not settings.state_dir.is_dir()
        and not (settings.root / CONFIG_FILE).is_file()
    ):
        raise StorageError(
            f"no cellpipe project in {settings.root} (no .cellpipe folder)",
            hint="run a notebook first: cellpipe run NOTEBOOK",
        )
    _private_state_dir(settings)
    artifacts = open_artifact_store(
        settings.artifacts_url,
        cache_dir=settings.cache_dir,
        storage_options=settings.storage_options(),
    )
    try:
        metadata = open_metadata_store(settings.db_url)
    except BaseException:
        artifacts.close()
        raise
    try:
        yield Project(settings=settings, artifacts=artifacts, metadata=metadata)
    finally:
        metadata.close()
        artifacts.close()


def run_notebook(
    path: str | Path,
    *,
    params: Mapping[str, object] | None = None,
    text_params: Iterable[str] = (),
    jobs: int | None = None,
    use_cache: bool = True,
    from_step: str | None = None,
    only: Sequence[str] = (),
    executor: str | None = None,
    sink: Callable[[Event], None] | None = None,
    bare_server: BareServer | None = None,
    offline: bool = False,
) -> RunReport:
    """Check the notebook and run its pipeline; the service behind `run` and ``cellpipe run``.

    Args:
        path: the notebook.
        params: parameter overrides as Python values.
        text_params: parameter overrides as ``NAME=VALUE`` text (``-p``).
        jobs: how many steps may run at once (default: all cores).
        use_cache: False re-runs every step.
        from_step: re-run this step and everything after it.
        only: run just these steps, with their inputs from the cache.
        executor: ``fork``, ``spawn`` or ``inprocess``.
        sink: receives progress events.
        bare_server: a fork server the caller already started in the notebook's folder (the
            CLI starts one before its own imports); it is used or killed, never leaked.
        offline: reuse cached steps without checking their ``cellpipe.data`` sources.

    Returns:
        The run's report.

    Raises:
        DefinitionError: the notebook is invalid (nothing runs).
        ParameterError: an override is unknown or ill-typed (nothing runs).
    """
    from cellpipe.runner._bare import start_bare

    # The fork server's own start (interpreter, imports, the IPython shell when the code
    # needs one) overlaps reading the notebook and opening the stores; it runs no notebook
    # code until the run sends it the preamble.
    bare = bare_server
    if executor not in (None, "fork") and bare is not None:
        bare.kill()
        bare = None
    if bare is None and executor in (None, "fork") and sys.platform.startswith("linux"):
        bare = start_bare()
    try:
        return _run_notebook(
            path,
            params=params,
            text_params=text_params,
            jobs=jobs,
            use_cache=use_cache,
            from_step=from_step,
            only=only,
            executor=executor,
            sink=sink,
            bare=bare,
            offline=offline,
        )
    finally:
        if bare is not None:
            bare.kill()  # a no-op once the run adopted it


def _run_notebook(
    path: str | Path,
    *,
    params: Mapping[str, object] | None,
    text_params: Iterable[str],
    jobs: int | None,
    use_cache: bool,
    from_step: str | None,
    only: Sequence[str],
    executor: str | None,
    sink: Callable[[Event], None] | None,
    bare: BareServer | None,
    offline: bool = False,
) -> RunReport:
    from cellpipe.pipeline.parameters import parse_assignments, resolve_parameters
    from cellpipe.runner.orchestrate import RunOptions, run_pipeline
    from cellpipe.storage.backends import sqlite_database_file

    pipeline = load_pipeline(path)
    if bare is not None:
        from cellpipe.runner.jobs import pipeline_needs_shell

        # The early server builds the IPython shell (if the code needs one) while this
        # process opens the stores and takes the start snapshot.
        bare.prepare(shell=pipeline_needs_shell(pipeline))
    values = resolve_parameters(
        pipeline, text=parse_assignments(text_params), values=dict(params or {})
    )
    for name in (*only, *([from_step] if from_step else [])):
        _check_step(pipeline, name)
    settings = Settings.for_notebook(Path(path))
    options = RunOptions(
        jobs=jobs,
        use_cache=use_cache,
        from_step=from_step,
        only=tuple(only),
        executor=executor,
        offline=offline,
    )
    with open_project(settings) as project:
        return run_pipeline(
            pipeline,
            params=values,
            artifacts=project.artifacts,
            metadata=project.metadata,
            state_dir=settings.state_dir,
            options=options,
            sink=sink,
            database=sqlite_database_file(settings.db_url),
            bare_server=bare,
        )


def _check_step(pipeline: Pipeline, name: str) -> None:
    if name not in pipeline.step_names:
        raise UnknownStepError(name, where=str(pipeline.path), steps=pipeline.step_names)


class Run:
    """A finished run, as `cellpipe.run` returns it.

    In Jupyter it shows as a table (``_repr_html_``): status, parameters, metrics, every
    step with its duration and cache decision, and the graph with the final states.

    Attributes:
        run_id: the run's id.
        status: ``succeeded``, ``failed`` or ``cancelled``.
        parameters: the parameter values used.
        metrics: the metrics logged.
        steps: step name -> status (``succeeded``, ``cached``, ``failed``, ``skipped``).
        notebook: the executed notebook of the whole run.
        error: what failed, when it failed.
        failures: the failed steps: ``(step, error, traceback)``, the traceback pointing at
            notebook cells.
    """

    def __init__(
        self,
        report: RunReport,
        settings: Settings,
        *,
        edges: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        self._report = report
        self._settings = settings
        self._edges = tuple(edges)
        self.run_id = report.run.run_id
        self.status = report.run.status.value
        self.parameters = dict(report.run.parameters)
        self.metrics = dict(report.run.metrics)
        self.steps = {name: rec.status.value for name, rec in report.steps.items()}
        self.notebook = report.notebook
        self.error = report.run.error
        self.failures = tuple((f.step, f.error or "", f.traceback or "") for f in report.failures)

    def __repr__(self) -> str:
        return f"<cellpipe.Run {self.run_id} {self.status} metrics={self.metrics}>"

    def _rows(self) -> list[StepRow]:
        from cellpipe.views.live import StepRow

        rows = []
        for name, rec in self._report.steps.items():
            duration = None
            if rec.started_at is not None and rec.finished_at is not None:
                duration = max(0.0, (rec.finished_at - rec.started_at).total_seconds())
            if rec.status.value == "cached":
                duration = None
            reason = rec.cache_reason if rec.status.value in ("cached", "succeeded") else ""
            rows.append(
                StepRow(
                    step=name,
                    status=rec.status.value,
                    duration_s=duration,
                    reason=reason or rec.error or "",
                    source_run=rec.source_run,
                )
            )
        return rows

    def _repr_html_(self) -> str:
        from cellpipe.views.live import run_html

        failed = "\n".join(f"step '{s}' failed: {e}\n{t}" for s, e, t in self.failures)
        return run_html(
            run_id=self.run_id,
            status=self.status,
            parameters=self.parameters,
            metrics=self.metrics,
            steps=self._rows(),
            edges=self._edges,
            error=failed or None,
        )

    def to_pandas(self) -> Any:
        """Return the steps as a pandas DataFrame, one row per step.

        Columns: ``step``, ``status``, ``duration_s`` (None for a cache hit), ``reason`` (the
        cache decision in words, or the error), ``source_run`` (the run a cache hit reused).

        Raises:
            CellpipeError: when pandas is not installed.
        """
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is in every extra we test
            from cellpipe.errors import CellpipeError

            raise CellpipeError(
                "Run.to_pandas needs pandas, which is not installed",
                hint="pip install pandas",
            ) from None
        return pd.DataFrame(
            [
                {
                    "step": r.step,
                    "status": r.status,
                    "duration_s": r.duration_s,
                    "reason": r.reason,
                    "source_run": r.source_run,
                }
                for r in self._rows()
            ],
            columns=["step", "status", "duration_s", "reason", "source_run"],
        )

    def load(self, step: str, variable: str) -> Any:
        """Return the value of ``variable`` as ``step`` output it in this run."""
        return _load_value(self._settings, self.run_id, step, variable)


def run(
    notebook: str | Path,
    params: Mapping[str, object] | None = None,
    *,
    jobs: int | None = None,
    use_cache: bool = True,
    from_step: str | None = None,
    only: Sequence[str] = (),
    executor: str | None = None,
    offline: bool = False,
    live: bool = True,
    raise_on_error: bool = True,
) -> Run:
    """Run a notebook's pipeline and return the run.

    In a Jupyter kernel a live view shows the run as it goes, updated in place: the steps'
    graph with each step's state and why it runs or is reused, the elapsed time and the
    steps' printed output (a progress bar that rewrites its line is one line); at the end the
    metrics and each step's rich outputs (figures, HTML, tables). Elsewhere (plain Python, a
    terminal) the same news comes as text lines. Interrupting the kernel (Ctrl-C) cancels
    the run: every step process is stopped and the run is recorded as cancelled.

    Args:
        notebook: the notebook file.
        params: parameter overrides, e.g. ``{"MAX_DEPTH": 6}``.
        jobs: how many steps may run at once (default: all cores).
        use_cache: False re-runs every step.
        from_step: re-run this step and everything after it.
        only: run just these steps, with their inputs from the cache.
        executor: ``fork`` (default on Linux), ``spawn`` or ``inprocess``.
        offline: reuse cached steps without asking the sources they read through
            `cellpipe.data` whether they changed (by default each source is asked for its
            version, one stat or HEAD request, before a cached step is trusted).
        live: False shows nothing while the run goes.
        raise_on_error: False returns a failed run instead of raising `RunFailedError`.

    Returns:
        The run: status, metrics and `Run.load` for any step's outputs.

    Raises:
        DefinitionError: the notebook is invalid (nothing runs).
        ParameterError: a parameter is unknown or ill-typed (nothing runs).
        RunFailedError: a step failed (unless ``raise_on_error=False``); its ``run`` is the
            `Run`, and the failed steps' tracebacks were shown.
        KeyboardInterrupt: (`RunCancelled`, with the report) the run was cancelled.

    Example::

        run = cellpipe.run("train.ipynb", params={"MAX_DEPTH": 6})
        run.metrics["accuracy"], run.load("train", "model")
    """
    from cellpipe.runner.orchestrate import RunCancelled

    pipeline = load_pipeline(notebook)
    edges = tuple((e.source, e.target, ", ".join((*e.variables, *e.files))) for e in pipeline.edges)
    view = _live_view(pipeline, edges) if live else None
    try:
        report = run_notebook(
            notebook,
            params=params,
            jobs=jobs,
            use_cache=use_cache,
            from_step=from_step,
            only=only,
            executor=executor,
            offline=offline,
            sink=None if view is None else view.emit,
        )
    except RunCancelled as cancelled:
        if view is not None:
            view.close()
            _show_outcome(cancelled.report)
        raise
    finally:
        if view is not None:
            view.close()
    result = Run(report, Settings.for_notebook(Path(notebook)), edges=edges)
    if view is not None:
        _show_outcome(report)
    if report.failures and raise_on_error:
        from cellpipe.errors import RunFailedError, StepFailedError

        raise RunFailedError(
            run_id=result.run_id,
            failures=[
                StepFailedError(
                    f.error or "the step failed",
                    step=f.step,
                    traceback_text=f.traceback,
                    log_path=f.log_path,
                    hint=f.hint,
                )
                for f in report.failures
            ],
            run=result,
        )
    return result


def _live_view(pipeline: Pipeline, edges: Sequence[tuple[str, str, str]]) -> _LiveSink:
    """The notebook's live view in a Jupyter kernel, else text lines on stdout."""
    from cellpipe.views.live import NotebookLiveView, TextLiveView, in_jupyter

    if in_jupyter():
        return NotebookLiveView(
            edges=edges, steps=pipeline.step_names, title=Path(pipeline.path).name
        )
    return TextLiveView(sys.stdout)


def _show_outcome(report: RunReport) -> None:
    """After the live view: the metrics, then each step's rich outputs (Jupyter), or text."""
    from cellpipe.views.live import in_jupyter, metrics_html, rich_outputs

    metrics = dict(report.run.metrics)
    if not in_jupyter():
        if metrics:
            sys.stdout.write("metrics: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
            sys.stdout.write("\n")
        return
    import json
    from html import escape

    from IPython.display import HTML, display

    if metrics:
        display(HTML(metrics_html(metrics)))  # type: ignore[no-untyped-call]
    if report.notebook is None:
        return
    try:
        document = json.loads(report.notebook.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for step, bundles in rich_outputs(document):
        display(HTML(f"<b>step <code>{escape(step)}</code></b>"))  # type: ignore[no-untyped-call]
        for bundle in bundles:
            display(bundle, raw=True)  # type: ignore[no-untyped-call]


def load(run_id: str, step: str, variable: str, *, project: str | Path | None = None) -> Any:
    """Return the value ``step`` output as ``variable`` in run ``run_id``.

    Args:
        run_id: the run's id, a unique prefix of it, or ``latest`` / ``latest~N``.
        step: the step's name.
        variable: the output's name.
        project: a folder inside the project (default: ``$CELLPIPE_PROJECT``, else the
            working directory).

    Raises:
        ProjectNotFoundError: when no project is found (the folders searched are named).
        RunNotFoundError: for an unknown run, step or variable.

    Example::

        model = cellpipe.load("latest", "train", "model")
    """
    settings = find_project(project)
    return _load_value(settings, run_id, step, variable)


def _private_state_dir(settings: Settings) -> None:
    """Create the project's ``.cellpipe`` 0700, or make an existing one 0700 if it is ours.

    ``.cellpipe`` is the project's private state (records, artifacts, logs, executed
    notebooks); a folder from an older cellpipe (0755) is closed here. Stores configured
    elsewhere (``artifacts_url``, ``db_url``) keep the modes their owner gave them.
    """
    import os
    import stat

    from cellpipe.storage.artifacts import PRIVATE_DIR_MODE, make_private_dir

    state = settings.state_dir
    make_private_dir(state)
    try:
        st = state.stat()
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            state.chmod(stat.S_IMODE(st.st_mode) & ~0o077 | PRIVATE_DIR_MODE)
    except OSError:  # read-only or foreign: nothing to tighten from here
        pass


def find_project(start: str | Path | None = None) -> Settings:
    """Return the settings of the project containing ``start``.

    The search is the same everywhere (Python, the CLI, the magics): it starts at ``start``
    when given (``project=``, ``--project``; a notebook file means its folder), else at the
    folder in the ``CELLPIPE_PROJECT`` environment variable, else at the working directory,
    and goes up to the nearest folder with a ``.cellpipe`` folder or a ``cellpipe.toml``.

    Args:
        start: a folder inside the project, a notebook in it, or None.

    Raises:
        ProjectNotFoundError: (a `StorageError`) naming the folders searched and how to
            point at the project.
    """
    return Settings.find(start)


def step_record(project: Project, run_id: str, step: str) -> tuple[RunRecord, StepRunRecord]:
    """Return the run and one of its step runs.

    Raises:
        RunNotFoundError: for an unknown run or step.
    """
    run_record = project.metadata.get_run(run_id)
    records = {r.step: r for r in project.metadata.step_runs(run_record.run_id)}
    if step not in records:
        raise UnknownStepError(step, where=f"run {run_record.run_id}", steps=list(records))
    return run_record, records[step]


def _load_value(settings: Settings, run_id: str, step: str, variable: str) -> Any:
    from cellpipe.storage.serializers import deserialize

    with open_project(settings, create=False) as project:
        run_record, record = step_record(project, run_id, step)
        if variable not in record.outputs:
            raise RunNotFoundError(
                f"step '{step}' of run {run_record.run_id} has no output '{variable}'",
                hint="its outputs: " + (", ".join(record.outputs) or "none"),
            )
        ref = record.outputs[variable]
        return deserialize(ref.serializer, project.artifacts.local_path(ref.digest))


def log_metric(name: str, value: object) -> None:
    """Log a metric of the current step (or, outside a run, of the notebook session).

    Args:
        name: the metric's name.
        value: a number, string or boolean (numpy scalars are converted).
    """
    from cellpipe.runner.context import log_metric as _log

    _log(name, value)


def restore(
    run_id: str,
    step: str,
    *,
    project: str | Path | None = None,
    namespace: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Load exactly a step's inputs and the run's parameters into the live namespace.

    Use it to debug a step interactively: run the step's cells afterwards and they see what
    they saw in the run. The values go into IPython's user namespace when called in IPython
    (Jupyter), else into the caller's module globals.

    Args:
        run_id: the run's id, a unique prefix of it, or ``latest`` / ``latest~N``.
        step: the step's name.
        project: a folder inside the project (default: ``$CELLPIPE_PROJECT``, else the
            working directory).
        namespace: where to put the values instead (a dict you pass in).

    Returns:
        Name -> value: the parameters, then the step's inputs.

    Raises:
        ProjectNotFoundError: when no project is found (the folders searched are named).
        RunNotFoundError: for an unknown run or step, or a step that never started.

    Example::

        cellpipe.restore("wine-2026", "train_forest")   # then run the step's cells
    """
    import sys

    from cellpipe.storage.serializers import deserialize

    settings = find_project(project)
    with open_project(settings, create=False) as store:
        run_record, record = step_record(store, run_id, step)
        if record.started_at is None and not record.inputs:
            raise RunNotFoundError(
                f"step '{step}' of run {run_record.run_id} never started "
                f"({record.status.value}), so its inputs were never assembled",
                hint="restore the step in a run where it ran or failed: `cellpipe runs`",
            )
        values: dict[str, Any] = dict(run_record.parameters)
        for name, ref in record.inputs.items():
            values[name] = deserialize(ref.serializer, store.artifacts.local_path(ref.digest))
    if namespace is None:
        namespace = sys._getframe(1).f_globals
        if "IPython" in sys.modules:
            from IPython import get_ipython

            shell = get_ipython()
            # A real front end (Jupyter kernel, IPython terminal), not a bare InteractiveShell
            # such as the one cellpipe's own step capture creates.
            if shell is not None and type(shell).__name__ != "InteractiveShell":
                namespace = shell.user_ns
    namespace.update(values)
    return values


def data(
    url: str | Path,
    *,
    refresh: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    project: str | Path | None = None,
) -> Path:
    """Return a local, read-only copy of an external file, fetched once per source version.

    Inside a step the read is recorded as an input of the step (``cellpipe lineage``). The
    source's version (ETag, or size and modification time) is asked for with one metadata
    request (HEAD over HTTP); when it is known, nothing is downloaded. When the source cannot
    be reached the last stored copy is used, with a warning, so offline re-runs work.

    Local paths, ``file://`` and ``http(s)://`` URLs work in the default install (Python's
    standard library); other schemes (``s3://``, ``gs://``, ...) use fsspec, from the
    ``team`` extra.

    Args:
        url: a local path, a ``file://``, ``http://`` or ``https://`` URL, or any fsspec URL.
        refresh: download again even when the stored version looks current.
        storage_options: passed to fsspec (credentials, ``endpoint_url``).
        project: outside a run, a folder inside the project whose store keeps the copy
            (default: ``$CELLPIPE_PROJECT``, else the project at or above the working
            directory, else the working directory). Inside a step: the run's project.

    Returns:
        A local file path; ``pd.read_csv(cellpipe.data(url))`` works.

    Raises:
        CellpipeError: when the source cannot be read and no copy is stored.

    Example::

        wine = pd.read_csv(cellpipe.data("https://example.org/wine.csv"))
    """
    from cellpipe.runner.context import current_step
    from cellpipe.runner.data import data as _data

    if current_step() is not None:
        return _data(url, refresh=refresh, storage_options=storage_options)
    from cellpipe.config import project_start
    from cellpipe.storage.backends import open_artifact_store

    start, _ = project_start(project)
    settings = Settings.discover(start) or Settings.for_notebook(start.resolve() / "_")
    _private_state_dir(settings)
    store = open_artifact_store(
        settings.artifacts_url,
        cache_dir=settings.cache_dir,
        storage_options=settings.storage_options(),
    )
    try:
        return _data(
            url,
            refresh=refresh,
            state_dir=settings.state_dir,
            store=store,
            storage_options=storage_options,
        )
    finally:
        store.close()


def register_model(
    obj: Any,
    name: str,
    *,
    input_example: Any = None,
    description: str = "",
    alias: str | None = None,
    project: str | Path | None = None,
) -> ModelVersion:
    """Register ``obj`` as the next version of model ``name`` in the project's registry.

    Inside a step the version records its lineage: the run, the step, the variable holding
    ``obj`` (when exactly one global name of the step refers to it), the run's parameters and
    the metrics known so far (those of the steps that finished and of this step). Outside a
    run it is registered without lineage, in the project found from the working directory
    (or ``project``).

    A step whose cache key is known does not run again, so on a cache hit this call does not
    happen: the version registered by the run that computed the step already exists. Use
    `cellpipe models register` to register a cached output again, or run with ``--no-cache``.

    Args:
        obj: the model (scikit-learn objects are stored with joblib, notebook-defined
            classes and functions with cloudpickle).
        name: the model's name: 1-64 letters, digits, ``-``, ``_`` or ``.``.
        input_example: a few rows of input (array, DataFrame, list), used to infer the
            signature; not stored.
        description: free text about this version.
        alias: also point this alias at the new version (e.g. ``"staging"``).
        project: outside a run, a folder inside the project (default: the working directory).

    Returns:
        The new version; ``version.ref`` is ``"NAME:N"``.

    Raises:
        RegistryError: for an invalid name or alias.
        SerializationError: when the object cannot be stored.
        StorageError: outside a run, when there is no project at or above the folder.

    Example::

        cellpipe.register_model(forest, "wine", input_example=X_test[:5], alias="staging")
    """
    import sys

    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.runner.context import current_step

    context = current_step()
    if context is None:
        settings = find_project(Path(project) if project is not None else Path.cwd())
        with open_project(settings, create=False) as store:
            registry = ModelRegistry(store.metadata, store.artifacts)
            return registry.register(
                obj, name, input_example=input_example, description=description, alias=alias
            )
    caller = sys._getframe(1).f_globals
    names = [k for k, v in caller.items() if v is obj and not k.startswith("_")]
    with open_project(Settings.for_notebook(Path(context.notebook))) as store:
        parameters: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        run_id: str | None = None
        if context.run_id:
            try:
                run_record = store.metadata.get_run(context.run_id)
            except RunNotFoundError:
                run_record = None
            if run_record is not None:
                run_id = run_record.run_id
                parameters = dict(run_record.parameters)
                metrics = dict(run_record.metrics)
                for record in store.metadata.step_runs(run_id):
                    metrics.update(record.metrics)
        metrics.update(context.metrics)
        registry = ModelRegistry(store.metadata, store.artifacts)
        return registry.register(
            obj,
            name,
            run_id=run_id,
            step=context.step if run_id else None,
            variable=names[0] if len(names) == 1 and run_id else None,
            parameters=parameters,
            metrics=metrics,
            input_example=input_example,
            description=description,
            alias=alias,
        )


def load_model(ref: str, *, project: str | Path = ".") -> Any:
    """Return the model object a reference names, from the project's registry.

    Args:
        ref: ``NAME`` or ``NAME@latest`` (the newest version), ``NAME:3``, ``NAME@production``.
        project: a folder inside the project (default: the working directory).

    Raises:
        RegistryError: for a malformed reference.
        ModelNotFoundError: for an unknown model, version or alias (what exists is listed).

    Example::

        model = cellpipe.load_model("wine@production")
    """
    from cellpipe.registry.registry import ModelRegistry

    settings = find_project(Path(project))
    with open_project(settings, create=False) as store:
        registry = ModelRegistry(store.metadata, store.artifacts)
        return registry.load(registry.resolve(ref))


def left_out_secrets(notebook: str | Path) -> tuple[str, ...]:
    """Return the workspace files a snapshot would leave out by the secret rules.

    Only names are looked at (and ``cellpipe.toml``'s text): nothing is hashed or stored.

    Args:
        notebook: the notebook; its folder is the workspace.

    Returns:
        Workspace-relative paths, folders ending in ``/`` (`SECRET_IGNORED`, ``cellpipe.toml``
        holding a password), minus what ``.cellpipeignore`` takes back with ``!pattern``.
    """
    from cellpipe.storage.snapshots import left_out_secrets as walk

    return walk(Path(notebook).resolve().parent)
