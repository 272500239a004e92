"""What ``import cellpipe`` offers inside a notebook: thin functions over the services.

Owns: the public Python API (`load_pipeline`, `run`, `load`, `log_metric`, `register_model`,
`load_model`, and with the CLI's words `check`, `runs`, `show`, `compare`, `why`, `logs`,
`lineage`, `models`, `compile`, `serve`) and the service functions the CLI calls too
(`open_project`, `run_notebook`, and one per command at the end of this file), so the
notebook, the CLI and the UI behave the same: the CLI renders the same result objects
(`cellpipe.views.results`) as text that a notebook shows as HTML.

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
from cellpipe.errors import (  # issue 11
    CellpipeError,
    DefinitionError,
    PipelineValidationError,
    RunNotFoundError,
    StorageError,
    UnknownStepError,
)
from cellpipe.pipeline import Pipeline

if TYPE_CHECKING:
    from cellpipe.registry.model import ModelVersion
    from cellpipe.runner._bare import BareServer
    from cellpipe.runner.events import Event
    from cellpipe.runner.orchestrate import RunReport
    from cellpipe.storage.metadata import SqlMetadataStore
    from cellpipe.storage.protocols import ArtifactDigest, ArtifactStore
    from cellpipe.storage.records import RunRecord, StepRunRecord
    from cellpipe.views.live import NotebookLiveView, StepRow, TextLiveView
    from cellpipe.views.results import (
        CheckResult,
        Comparison,
        CompileResult,
        LineageView,
        ModelDetail,
        ModelList,
        RunDetail,
        RunList,
        StepLog,
        WhyResult,
    )

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

    pipeline = _load(Path(path))
    register_ipython_formatters()
    return pipeline


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
        from cellpipe.views.results import ui_link_html

        failed = "\n".join(f"step '{s}' failed: {e}\n{t}" for s, e, t in self.failures)
        html = run_html(
            run_id=self.run_id,
            status=self.status,
            parameters=self.parameters,
            metrics=self.metrics,
            steps=self._rows(),
            edges=self._edges,
            error=failed or None,
        )
        link = ui_link(f"/runs/{self.run_id}", project=self._settings.root)
        return html + ui_link_html(link) if link else html

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
    tags: Mapping[str, str] | None = None,
    project: str | Path | None = None,
) -> ModelVersion:
    """Register ``obj`` as the next version of model ``name`` in the project's registry.

    Inside a step the version records its lineage: the run, the step, the variable holding
    ``obj`` (when exactly one global name of the step refers to it), the run's parameters and
    the metrics known so far (those of the steps that finished and of this step). Outside a
    run it is registered without lineage, in the project found from the working directory
    (or ``project``).

    Every version records the packages it needs (distribution -> installed version): those
    the object is made of with their requirements (scikit-learn -> numpy, scipy, joblib,
    ...) and the serializer's; when the object names none (a function defined in the
    notebook), inside a step the distributions the run imported so far. The first 5 rows of
    ``input_example`` are kept as an Open Inference Protocol ``inputs`` list.

    A step whose cache key is known does not run again, so on a cache hit this call does not
    happen: the version registered by the run that computed the step already exists. Use
    `cellpipe models register` to register a cached output again, or run with ``--no-cache``.

    Args:
        obj: the model (scikit-learn objects are stored with joblib, notebook-defined
            classes and functions with cloudpickle).
        name: the model's name: 1-64 letters, digits, ``-``, ``_`` or ``.``.
        input_example: a few rows of input (array, DataFrame, list), used to infer the
            signature; its first 5 rows are stored with the version.
        description: free text about this version.
        alias: also point this alias at the new version (e.g. ``"staging"``).
        tags: key -> value tags of the version (``{"team": "ml"}``).
        project: outside a run, a folder inside the project (default: ``CELLPIPE_PROJECT``,
            else the working directory).

    Returns:
        The new version; ``version.ref`` is ``"NAME:N"``.

    Raises:
        RegistryError: for an invalid name, alias or tag.
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
        settings = find_project(project)
        with open_project(settings, create=False) as store:
            registry = ModelRegistry(store.metadata, store.artifacts)
            return registry.register(
                obj,
                name,
                input_example=input_example,
                description=description,
                alias=alias,
                tags=tags,
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
            tags=tags,
            run_packages=_step_distributions(Path(context.notebook).parent),
        )


def _step_distributions(folder: Path) -> list[str]:
    """The distributions this step process's notebook code has imported so far."""
    from cellpipe.notebook.packages import resolve_modules
    from cellpipe.runner.child import imported_modules

    return [
        p.distribution
        for p in resolve_modules(imported_modules(), folder=folder)
        if p.distribution is not None
    ]


def _recorded_distributions(
    project: Project, run_record: RunRecord, record: StepRunRecord
) -> list[str]:
    """The distributions a recorded step run imported (from its executed notebook), if known."""
    import json

    from cellpipe.notebook.packages import resolve_modules

    if record.notebook_digest is None:
        return []
    try:
        with project.artifacts.open(record.notebook_digest) as f:
            meta = json.load(f).get("metadata", {}).get("cellpipe", {})
    except (OSError, ValueError, CellpipeError):
        return []
    imported = meta.get("imported")
    if not isinstance(imported, list):
        return []
    folder = Path(run_record.notebook).parent
    return [
        p.distribution
        for p in resolve_modules([str(m) for m in imported], folder=folder)
        if p.distribution is not None
    ]


def load_model(ref: str, *, project: str | Path | None = None) -> Any:
    """Return the model object a reference names, from the project's registry.

    Args:
        ref: ``NAME`` or ``NAME@latest`` (the newest version), ``NAME:3``, ``NAME@production``.
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the
            working directory).

    Raises:
        RegistryError: for a malformed reference.
        ModelNotFoundError: for an unknown model, version or alias (what exists is listed).

    Example::

        model = cellpipe.load_model("wine@production")
    """
    from cellpipe.registry.registry import ModelRegistry

    settings = find_project(project)
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


# -- The service functions of the CLI commands, and their Python API (issue 11) -------------
#
# One code path: each `cellpipe COMMAND` calls the function below and renders what it returns;
# in a notebook the same function's result shows itself (`cellpipe.views.results`). Every
# function here opens the project's stores, gathers records and hands them to a view.


class NotebookNotFoundError(DefinitionError):
    """The notebook path given does not name a file.

    Args:
        path: the path as the user typed it.
        reason: what is wrong with it, e.g. ``no such notebook``.
        hint: how to fix it.
    """

    headline = "cannot open the notebook"
    code = "no-such-notebook"

    def __init__(self, path: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{reason}: {path}", hint=hint)
        self.path = path


def check_path(path_text: str | Path) -> Path:
    """Return ``path_text`` as a path after checking that it names a file.

    Raises:
        NotebookNotFoundError: if the path is missing or is a folder (with a "did you mean").
    """
    path = Path(path_text)
    if path.is_dir():
        raise NotebookNotFoundError(
            str(path_text), reason="not a notebook but a folder", hint=_folder_hint(path)
        )
    if not path.is_file():
        raise NotebookNotFoundError(
            str(path_text), reason="no such notebook", hint=_missing_hint(path)
        )
    return path


def _notebooks_in(folder: Path) -> list[str]:
    try:
        return sorted(
            p.name for p in folder.iterdir() if p.suffix in {".ipynb", ".py"} and p.is_file()
        )
    except OSError:
        return []


def _folder_hint(folder: Path) -> str:
    candidates = [n for n in _notebooks_in(folder) if n.endswith(".ipynb")]
    if candidates:
        return "pass a notebook file, e.g. " + str(folder / candidates[0])
    return "pass a notebook file (.ipynb or a percent script .py)"


def _missing_hint(path: Path) -> str:
    import difflib

    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist either; check the path"
    close = difflib.get_close_matches(path.name, _notebooks_in(folder), n=1, cutoff=0.6)
    if close:
        return f"did you mean {folder / close[0]}?"
    return "check the path; cellpipe reads .ipynb notebooks and percent scripts (.py)"


def _settings_of(project: str | Path | None) -> Settings:
    # The project of a service function: `find_project`'s one rule (project=, else
    # CELLPIPE_PROJECT, else the working directory, then up to the nearest .cellpipe).
    return find_project(project)


@contextmanager
def _opened(project: str | Path | None) -> Iterator[Project]:
    with open_project(_settings_of(project), create=False) as opened:
        yield opened


def check(notebook: str | Path) -> CheckResult:
    """Check a notebook's pipeline without running anything (``cellpipe check``).

    Definition errors are not raised: the result says what is wrong (``.ok``, ``.errors``,
    each with its cell, line and hint), as ``cellpipe check --json`` does.

    Args:
        notebook: the notebook (``.ipynb`` or percent script).

    Returns:
        The check: ``.pipeline`` when valid; ``.to_dict()`` is the ``--json`` document.

    Example::

        cellpipe.check("train.ipynb")     # in Jupyter: the graph, steps and parameters
    """
    from cellpipe.views.check import failure_document, success_document
    from cellpipe.views.results import CheckResult

    try:
        path = check_path(notebook)
        from cellpipe.notebook import analyze_notebook

        report = analyze_notebook(path)
    except CellpipeError as error:
        return CheckResult(failure_document(str(notebook), error), error=error)
    if report.ok and report.pipeline is not None:
        register_ipython_formatters()
        document = success_document(report.pipeline)
        document["secrets_left_out"] = list(left_out_secrets(notebook))
        return CheckResult(document, report.pipeline, warnings=report.warnings)
    invalid = PipelineValidationError(report.errors, path=str(notebook))
    return CheckResult(
        failure_document(str(notebook), invalid, warnings=report.warnings),
        error=invalid,
        warnings=report.warnings,
    )


def runs(
    project: str | Path | None = None,
    notebook: str | Path | None = None,
    *,
    status: str | None = None,
    limit: int = 20,
    params: Iterable[str] = (),
    metrics: Iterable[str] = (),
) -> RunList:
    """List the project's runs, newest first (``cellpipe runs``).

    Args:
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).
        notebook: only runs of this notebook.
        status: only runs that ended so (``succeeded``, ``failed``, ...).
        limit: at most this many runs.
        params: only runs with these parameter values, ``NAME=VALUE`` each.
        metrics: only runs whose metrics compare so, e.g. ``"acc>=0.9"``.

    Returns:
        The runs: ``.to_pandas()`` has one row per run, parameters and metrics as columns.

    Example::

        cellpipe.runs(metrics=["accuracy>0.9"]).to_pandas()
    """
    from cellpipe.storage.lineage import RunFilter
    from cellpipe.storage.records import RunStatus
    from cellpipe.views.results import RunList
    from cellpipe.views.runs import runs_document

    keep = RunFilter.parse(params=params, metrics=metrics)
    wanted = RunStatus(status) if status else None
    path = str(Path(notebook).resolve()) if notebook else None
    with _opened(project) as opened:
        found = opened.metadata.list_runs(
            notebook=path, status=wanted, limit=None if keep else limit
        )
    if keep:  # filter first, then cut to the limit
        found = [r for r in found if keep.matches(r)][:limit]
    return RunList(runs_document(found))


def show(run: str, *, project: str | Path | None = None) -> RunDetail:
    """Show one run: parameters, metrics, each step with its outputs (``cellpipe show``).

    Each step lists the values it stored, what it displayed (figures, HTML, DataFrames,
    counted by mime type from its executed notebook) and the workspace files it wrote (from
    its before/after snapshots; without them, the file writes the analysis knows).

    Args:
        run: the run id, a unique prefix, or ``latest`` / ``latest~N``.
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).

    Example::

        cellpipe.show("latest").to_pandas()
    """
    from cellpipe.views.results import RunDetail
    from cellpipe.views.runs import show_document

    settings = _settings_of(project)
    with open_project(settings, create=False) as opened:
        record = opened.metadata.get_run(run)
        steps = opened.metadata.step_runs(record.run_id)
        changes, snapshotted = _file_changes(opened, record.run_id)
        displayed = {s.step: _displayed(opened, s.notebook_digest) for s in steps}
    written = _files_written(record.notebook, steps, changes, snapshotted)
    detail = RunDetail(
        show_document(
            record,
            steps,
            settings.state_dir,
            changes=changes,
            displayed=displayed,
            written=written,
        )
    )
    detail.ui_link = ui_link(f"/runs/{record.run_id}", project=settings.root)
    return detail


def _file_changes(project: Project, run_id: str) -> tuple[list[dict[str, Any]], set[str]]:
    """Return the workspace files each step changed, from its after snapshot (issue 10).

    Runs recorded before changes were attributed, or with snapshots off, have none. Also
    returns the steps whose after snapshot records changes (an empty set of changes too).
    """
    from cellpipe.storage.lineage import SnapshotKind, history_for
    from cellpipe.storage.snapshots import read_manifest

    history = history_for(project.metadata)
    if history is None:
        return [], set()
    found: list[dict[str, Any]] = []
    snapshotted: set[str] = set()
    for snap in history.snapshots(run_id):
        if snap.kind is not SnapshotKind.AFTER:
            continue
        try:
            manifest = read_manifest(project.artifacts, snap.manifest)
        except CellpipeError:  # a missing manifest: `snapshot list` shows what there is
            continue
        if "changes" in manifest:
            snapshotted.add(snap.step)
        for path, change in sorted(manifest.get("changes", {}).items()):
            found.append({"step": snap.step, "file": path, **change})
    return found, snapshotted


def _displayed(project: Project, digest: ArtifactDigest | None) -> dict[str, int]:
    """Count what a step's executed notebook displayed, by mime type (none when unreadable)."""
    import json

    from cellpipe.views.runs import displayed_outputs

    if digest is None:
        return {}
    try:
        with project.artifacts.open(digest) as f:
            notebook = json.load(f)
    except (OSError, ValueError, CellpipeError):
        return {}
    return displayed_outputs(notebook if isinstance(notebook, dict) else None)


def _files_written(
    notebook: str,
    steps: Sequence[StepRunRecord],
    changes: Sequence[Mapping[str, Any]],
    snapshotted: set[str],
) -> dict[str, list[dict[str, Any]]]:
    """Step -> the files it wrote: its snapshot's changes, else the analysis' file writes."""
    written: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        step = str(change["step"])
        if step in change.get("by", [step]):
            written.setdefault(step, []).append(
                {"file": change["file"], "change": change["change"], "source": "snapshot"}
            )
    static: dict[str, set[str]] = {}
    if any(s.step not in snapshotted for s in steps) and Path(notebook).is_file():
        try:
            pipeline = load_pipeline(notebook)
        except CellpipeError:  # the notebook changed since: the snapshots are what we have
            pipeline = None
        if pipeline is not None:
            for reader in pipeline.steps:
                for ref in reader.files:
                    static.setdefault(ref.producer, set()).add(ref.path)
    for s in steps:
        if s.step not in snapshotted and s.step in static:
            written[s.step] = [
                {"file": path, "change": "written", "source": "analysis"}
                for path in sorted(static[s.step])
            ]
    return written


def compare(*runs: str, project: str | Path | None = None) -> Comparison:
    """Compare runs' parameters and metrics side by side (``cellpipe compare``).

    Args:
        runs: two or more run ids (unique prefixes, ``latest``, ``latest~1``).
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).

    Raises:
        CellpipeError: with fewer than two runs.

    Example::

        cellpipe.compare("latest~1", "latest").to_pandas()
    """
    from cellpipe.views.results import Comparison
    from cellpipe.views.runs import compare_document, compare_presence

    if len(runs) < 2:
        raise CellpipeError(
            "compare needs at least two runs",
            hint="cellpipe compare RUN1 RUN2 [RUN3 ...] (in Python: compare('a', 'b'))",
        )
    with _opened(project) as opened:
        records = [opened.metadata.get_run(r) for r in runs]
    return Comparison(compare_document(records), compare_presence(records))


def why(run: str, step: str, *, project: str | Path | None = None) -> WhyResult:
    """Explain why a step of a run was a cache hit or a miss (``cellpipe why``).

    Args:
        run: the run id, a unique prefix, or ``latest`` / ``latest~N``.
        step: the step's name.
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).
    """
    from cellpipe.views.results import WhyResult
    from cellpipe.views.runs import unread_outputs, why_document

    with _opened(project) as opened:
        run_record, record = step_record(opened, run, step)
        unread = unread_outputs(opened.metadata.step_runs(run_record.run_id), run_record.metrics)
    return WhyResult(why_document(run_record, record, unread))


def logs(run: str, step: str, *, project: str | Path | None = None) -> StepLog:
    """Return a step's captured stdout and stderr (``cellpipe logs``).

    A cached step has the log of the run that computed it (``source_run``).

    Raises:
        CellpipeError: for a step that has no log (it never ran).
    """
    from cellpipe.views.results import StepLog
    from cellpipe.views.runs import logs_document

    with _opened(project) as opened:
        run_record, record = step_record(opened, run, step)
        if record.log_digest is None:
            raise CellpipeError(
                f"step '{record.step}' of run {run_record.run_id} has no log "
                f"({record.status.value})",
                hint="only steps that ran (or reused a run that ran them) have a log; "
                f"`cellpipe show {run_record.run_id}` lists the steps",
            )
        with opened.artifacts.open(record.log_digest) as f:
            data = f.read()
    return StepLog(logs_document(run_record, record, data.decode("utf-8", "replace")))


class LineageUsageError(CellpipeError):
    """A lineage question asked with the wrong combination of arguments."""

    headline = "invalid arguments"
    exit_code = 2


def lineage(
    run: str | None = None,
    artifact: str | None = None,
    *,
    step: str | None = None,
    variable: str | None = None,
    depth: int = 50,
    limit: int | None = 50,
    project: str | Path | None = None,
) -> LineageView:
    """Return the lineage graph of a run, an artifact or one step output (``cellpipe lineage``).

    Args:
        run: a run id (prefix, ``latest``); when no run has it and it looks like a digest,
            the artifact's lineage (as ``cellpipe lineage TARGET`` does).
        artifact: an artifact digest or a unique prefix of it.
        step: with ``run`` and ``variable``: one step output's lineage.
        variable: the step's output.
        depth: for an artifact: step runs to follow each way.
        limit: for an artifact: the most step runs on each side of any artifact (0 or None:
            all).
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).

    Example::

        cellpipe.lineage("latest")          # in Jupyter: the graph drawn, then the text
    """
    from cellpipe.storage.lineage import (
        artifact_lineage,
        history_for,
        output_lineage,
        resolve_digest,
        run_lineage,
    )
    from cellpipe.storage.metadata import parse_latest
    from cellpipe.views.results import LineageView

    if (run is None) == (artifact is None):
        raise LineageUsageError(
            "give either a run or an artifact", hint="lineage('latest') or lineage(artifact=DIGEST)"
        )
    if (step is None) != (variable is None) or (step is not None and run is None):
        raise LineageUsageError(
            "one step output's lineage needs the run, the step and the variable",
            hint=f"cellpipe lineage {run or 'RUN'} {step or 'STEP'} VAR "
            f"(`cellpipe show {run or 'RUN'}` lists the outputs)",
        )
    cap = limit or None
    with _opened(project) as opened:
        history = history_for(opened.metadata)
        if history is None:  # pragma: no cover - every shipped store has one
            raise CellpipeError("this metadata store keeps no lineage")
        if run is not None and step is not None and variable is not None:
            graph = output_lineage(
                opened.metadata, history, run, step, variable, depth=depth, limit=cap
            )
        elif run is not None:
            try:
                graph = run_lineage(opened.metadata, history, run)
            except RunNotFoundError as run_error:
                if "ambiguous" in run_error.message or parse_latest(run) is not None:
                    raise
                digest = resolve_digest(history, opened.metadata, run)
                graph = artifact_lineage(opened.metadata, history, digest, depth=depth, limit=cap)
        else:
            assert artifact is not None
            digest = resolve_digest(history, opened.metadata, artifact)
            graph = artifact_lineage(opened.metadata, history, digest, depth=depth, limit=cap)
    return LineageView(graph)


def artifact_copy(
    run: str,
    step: str,
    variable: str,
    output: str | Path,
    *,
    force: bool = False,
    project: str | Path | None = None,
    stream: Any = None,
) -> dict[str, Any]:
    """Write the stored bytes of a step's output (or input) to a file (``artifacts get``).

    Args:
        run: the run id (prefix, ``latest``).
        step: the step's name.
        variable: the output's (or, when no output has the name, the input's) name.
        output: a file; a folder (existing, or ending in ``/``) gets ``VAR.SUFFIX``; ``-``
            writes to ``stream`` (a binary stream).
        force: replace an existing file.
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).
        stream: with ``output="-"``: where the bytes go.

    Returns:
        The ``cellpipe artifacts get --json`` document (``path`` is None for ``-``).

    Raises:
        RunNotFoundError: for an unknown run, step or variable.
        CellpipeError: when the file exists and ``force`` is False.
    """
    import os
    import shutil

    from cellpipe.storage.serializers import get_serializer

    text = str(output)
    with _opened(project) as opened:
        run_record, record = step_record(opened, run, step)
        ref = record.outputs.get(variable) or record.inputs.get(variable)
        if ref is None:
            names = sorted({*record.outputs, *record.inputs})
            raise RunNotFoundError(
                f"step '{record.step}' of run {run_record.run_id} has no output or input "
                f"'{variable}'",
                hint="its values: " + (", ".join(names) or "none"),
            )
        suffix = get_serializer(ref.serializer).suffix
        document: dict[str, Any] = {
            "run_id": run_record.run_id,
            "step": record.step,
            "variable": variable,
            "path": None,
            **ref.to_json(),
            "suffix": suffix,
        }
        if text == "-":
            with opened.artifacts.open(ref.digest) as src:
                shutil.copyfileobj(src, stream)
            stream.flush()
            return document
        target = Path(text)
        # `-o DIR/` (even one that does not exist yet) or an existing folder: the file goes
        # in it, named after the variable.
        if target.is_dir() or text.endswith(("/", os.sep)):
            target = target / f"{variable}{suffix}"
        if target.exists() and not force:
            raise CellpipeError(
                f"{target} exists", hint="choose another file name, or pass --force to replace it"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.cellpipe-tmp")
        with opened.artifacts.open(ref.digest) as src, tmp.open("wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
        tmp.replace(target)
    document["path"] = str(target)
    return document


# -- models -------------------------------------------------------------------------------------


def models(
    name: str | None = None, *, project: str | Path | None = None
) -> ModelList | ModelDetail:
    """List the registered models, or show one version (``cellpipe models list|show``).

    Args:
        name: None for every model; else a reference: ``NAME`` (its newest version),
            ``NAME:3``, ``NAME@production``.
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).

    Raises:
        ModelNotFoundError: for an unknown model, version or alias (what exists is listed).

    Example::

        cellpipe.models().to_pandas(); cellpipe.models("wine@production")
    """
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.views.models import models_document, version_detail_document
    from cellpipe.views.results import ModelDetail, ModelList

    with _opened(project) as opened:
        registry = ModelRegistry(opened.metadata, opened.artifacts)
        if name is None:
            return ModelList(models_document(registry.list_models()))
        version = registry.resolve(name)
        return ModelDetail(version_detail_document(version, registry.versions(version.name)))


def register_run_output(
    run: str,
    step: str,
    variable: str,
    name: str,
    *,
    description: str = "",
    alias: str | None = None,
    project: str | Path | None = None,
) -> dict[str, Any]:
    """Register a step output of a recorded run as a new model version (``models register``).

    Returns:
        The version's document (``cellpipe models register --json``).

    Raises:
        RegistryError: for an invalid name or alias.
        RunNotFoundError: for an unknown run, step or output.
    """
    from cellpipe.registry.model import check_alias, check_model_name
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.views.models import version_document

    check_model_name(name)  # before opening anything: a typo costs nothing
    if alias is not None:
        check_alias(alias)
    with _opened(project) as opened:
        registry = ModelRegistry(opened.metadata, opened.artifacts)
        run_record, record = step_record(opened, run, step)
        if variable not in record.outputs:
            raise RunNotFoundError(
                f"step '{step}' of run {run_record.run_id} has no output '{variable}'",
                hint="its outputs: " + (", ".join(record.outputs) or "none"),
            )
        metrics: dict[str, Any] = {}
        for other in opened.metadata.step_runs(run_record.run_id):
            metrics.update(other.metrics)
        metrics.update(run_record.metrics)
        version = registry.register_artifact(
            record.outputs[variable],
            name,
            run_id=run_record.run_id,
            step=record.step,
            variable=variable,
            parameters=dict(run_record.parameters),
            metrics=metrics,
            description=description,
            alias=alias,
            run_packages=_recorded_distributions(opened, run_record, record),
        )
    return version_document(version)


def move_alias(
    name: str, alias: str, version: int | None, *, project: str | Path | None = None
) -> dict[str, Any]:
    """Point ``NAME@ALIAS`` at a version, or remove it with ``version=None``.

    Returns:
        The move's document (``cellpipe models alias --json``).
    """
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.views.models import move_document

    with _opened(project) as opened:
        registry = ModelRegistry(opened.metadata, opened.artifacts)
        if version is None:
            move = registry.remove_alias(name, alias)
        else:
            move = registry.set_alias(name, alias, version)
    return move_document(move)


def alias_history(name: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """Return every move of a model's aliases (``cellpipe models history --json``)."""
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.views.models import move_document

    with _opened(project) as opened:
        registry = ModelRegistry(opened.metadata, opened.artifacts)
        moves = registry.alias_history(name)
        current = {a: v.version for v in registry.versions(name) for a in v.aliases}
    return {
        "name": name,
        "aliases": dict(sorted(current.items())),
        "moves": [move_document(m) for m in moves],
    }


# -- serving ------------------------------------------------------------------------------------


def _served(ref: str, version: ModelVersion) -> dict[str, Any]:
    return {
        "ref": ref,
        "name": version.name,
        "version": version.version,
        "type": version.artifact.type_name,
        "run_id": version.run_id,
        "step": version.step,
        "aliases": list(version.aliases),
    }


class BackgroundServer:
    """Registered models served over the Open Inference Protocol v2 from a background thread.

    Returned by `cellpipe.serve`; the project's stores stay open until `stop`.

    Attributes:
        url: the base URL, ``http://127.0.0.1:PORT``.
        grpc: the gRPC API's ``HOST:PORT`` (with ``grpc_port=``), else None.
        models: what is served (``ref``, ``name``, ``version``, ``type``, ...).
    """

    def __init__(self, running: Any, stack: Any, served: list[dict[str, Any]]) -> None:
        self._running = running
        self._stack = stack
        self.models = served
        self.url: str = running.url
        self.port: int = running.port
        self.grpc: str | None = running.grpc_address

    @property
    def running(self) -> bool:
        """Whether the server thread is still serving."""
        return self._stack is not None and bool(self._running._thread.is_alive())

    def stop(self) -> None:
        """Stop serving, wait for the server thread, close the stores (idempotent)."""
        if self._stack is None:
            return
        try:
            self._running.stop()
        finally:
            stack, self._stack = self._stack, None
            stack.close()

    def to_dict(self) -> dict[str, Any]:
        """Return what ``cellpipe serve --json`` prints: the URLs and the models."""
        return {"url": self.url, "grpc": self.grpc, "models": [dict(m) for m in self.models]}

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "serving" if self.running else "stopped"
        names = ", ".join(f"{m['name']}:{m['version']}" for m in self.models)
        return f"<cellpipe.BackgroundServer {names} at {self.url} ({state})>"

    def _repr_html_(self) -> str:
        from cellpipe.views.html import section, table

        rows = [
            [
                m["ref"],
                f"{m['name']}:{m['version']}",
                m["type"],
                f"{self.url}/v2/models/{m['name']}",
            ]
            for m in self.models
        ]
        return section(repr(self), table(["ref", "version", "object", "endpoint"], rows))


def _serve_settings(
    log_level: str,
    token: str | None,
    max_body: int | None,
    read_timeout: float | None,
    all_versions: bool,
) -> Any:
    from cellpipe.serving.server import Settings as ServeSettings

    options: dict[str, Any] = {"log_level": log_level, "all_versions": all_versions}
    if token:
        options["token"] = token
    if max_body is not None:
        options["max_body"] = max_body
    if read_timeout is not None:
        options["body_timeout"] = read_timeout
    return ServeSettings(**options)


def serve(
    ref: str | Sequence[str],
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    project: str | Path | None = None,
    log_level: str = "warning",
    token: str | None = None,
    max_body: int | None = None,
    all_versions: bool = False,
    grpc_port: int | None = None,
) -> BackgroundServer:
    """Serve registered models in the background, over the Open Inference Protocol v2.

    Every reference is resolved and loaded before the port opens. Stop it with ``.stop()``
    or use it as a context manager. Needs the ``serve`` extra. Always one process (the
    command ``cellpipe serve`` runs several workers).

    Args:
        ref: one reference or several (``NAME``, ``NAME:3``, ``NAME@production``).
        port: the TCP port (0: any free port; see ``.url``).
        host: the address to listen on.
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).
        log_level: the server's log level (``info``: one access-log line per request).
        token: when set, requests need ``Authorization: Bearer TOKEN`` (health probes do not).
        max_body: the largest request body in bytes (default 64 MiB).
        all_versions: expose every version of each name at ``/v2/models/NAME/versions/N``.
        grpc_port: also serve the OIP gRPC API on this port (0: any free port; see
            ``.grpc``; needs the ``grpc`` extra).

    Raises:
        ModelNotFoundError: for an unknown model, version or alias.
        ServingError: the port is in use, or the ``serve`` (or ``grpc``) extra is missing.

    Example::

        with cellpipe.serve("wine@production") as server:
            requests.post(f"{server.url}/v2/models/wine/infer", json=...)
    """
    from contextlib import ExitStack

    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.serving import start_server

    refs = [ref] if isinstance(ref, str) else list(ref)
    settings = _serve_settings(log_level, token, max_body, None, all_versions)
    stack = ExitStack()
    try:
        opened = stack.enter_context(open_project(_settings_of(project), create=False))
        registry = ModelRegistry(opened.metadata, opened.artifacts)
        served = [_served(r, registry.resolve(r)) for r in refs]
        running = start_server(
            refs, registry, host=host, port=port, settings=settings, grpc_port=grpc_port
        )
    except BaseException:
        stack.close()
        raise
    return BackgroundServer(running, stack, served)


def serve_forever(
    refs: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "warning",
    project: str | Path | None = None,
    announce: Callable[[dict[str, Any]], None] | None = None,
    token: str | None = None,
    max_body: int | None = None,
    read_timeout: float | None = None,
    workers: int | None = 1,
    all_versions: bool = False,
    grpc_port: int | None = None,
) -> None:
    """Resolve the references, say what is served, then serve until interrupted (``serve``).

    Args:
        refs: model references.
        host: the address to listen on.
        port: the TCP port (0: any free port; the announced URL has the real one).
        log_level: the server's log level (``info``: one access-log line per request).
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).
        announce: receives ``{"url", "grpc", "models", "workers", "token", "warnings"}`` once
            the ports are open, before serving.
        token: when set, requests need ``Authorization: Bearer TOKEN`` (health probes do not).
        max_body: the largest request body in bytes (default 64 MiB).
        read_timeout: seconds a request body may stay silent before 408 (default 30).
        workers: server processes sharing the port (models load once, before they fork);
            None: the usable CPUs, at most 4.
        all_versions: expose every version of each name at ``/v2/models/NAME/versions/N``.
        grpc_port: also serve the OIP gRPC API on this port (0: any free port).
    """
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.serving import serve as serve_blocking
    from cellpipe.serving.server import Addresses, default_workers, exposure_warning

    workers = default_workers() if workers is None else workers
    settings = _serve_settings(log_level, token, max_body, read_timeout, all_versions)
    with _opened(project) as opened:
        registry = ModelRegistry(opened.metadata, opened.artifacts)
        served = [_served(r, registry.resolve(r)) for r in refs]
        warning = exposure_warning(host, token)

        def said(where: Addresses) -> None:
            if announce is not None:
                announce(
                    {
                        "url": where.url,
                        "grpc": where.grpc,
                        "models": served,
                        "workers": workers,
                        "token": bool(token),
                        "warnings": [warning] if warning else [],
                    }
                )

        def fresh_registry() -> ModelRegistry:
            # In a forked worker: stores of its own, open until the process ends.
            child = open_project(_settings_of(project), create=False).__enter__()
            return ModelRegistry(child.metadata, child.artifacts)

        serve_blocking(
            list(refs),
            registry,
            host=host,
            port=port,
            settings=settings,
            workers=workers,
            grpc_port=grpc_port,
            follow=fresh_registry,
            announce=said,
        )


def write_kserve_manifest(
    ref: str,
    manifest: str | Path,
    *,
    storage_uri: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
    project: str | Path | None = None,
    predict_proba: bool = False,
    predictor: str = "auto",
    image: str | None = None,
    kserve_version: str | None = None,
    token_secret: str | None = None,
) -> ManifestWritten:
    """Write a KServe ``InferenceService`` for one model version (``serve --manifest``).

    A KServe runtime serves it when one loads the model (scikit-learn, XGBoost and LightGBM
    boosters of the releases its images ship), else a custom predictor runs ``cellpipe serve``
    in the image `model_image` builds (``image`` default: that context's tag, derived here
    the same way). See `cellpipe.serving.manifest`.

    Returns:
        The file written, the version, the predictor chosen and why.

    Raises:
        ServingError: see `cellpipe.serving.manifest.kserve_manifest`.
    """
    from cellpipe.errors import ServingError
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.serving.manifest import TARGET_KSERVE, kserve_manifest, render_manifest

    with _opened(project) as opened:
        version = ModelRegistry(opened.metadata, opened.artifacts).resolve(ref)
    written = kserve_manifest(
        version,
        storage_uri=storage_uri,
        name=name,
        namespace=namespace,
        predict_proba=predict_proba,
        predictor=predictor,
        image=image or (lambda: model_image_context(version).tag),
        kserve_version=kserve_version or TARGET_KSERVE,
        token_secret=token_secret,
    )
    path = Path(manifest)
    try:
        path.write_text(render_manifest(written), encoding="utf-8")
    except OSError as exc:
        raise ServingError(f"cannot write the manifest {path}: {exc.strerror or exc}") from exc
    return ManifestWritten(path=path, version=version, manifest=written)


# -- compile ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Compiled:
    """A compiled notebook.

    Attributes:
        pipeline: the checked pipeline.
        documents: the PipelineSpec (and PlatformSpec) documents.
        text: their YAML.
        name: the KFP pipeline name.
        image: the image given or derived from the build context, None for the default.
        parameters: the parameter defaults compiled in.
        run_packages: step -> the requirements added from its last local run.
    """

    pipeline: Pipeline
    documents: list[dict[str, Any]]
    text: str
    run_packages: dict[str, list[str]]
    name: str
    image: str | None
    parameters: dict[str, Any]


def with_run_packages(pipeline: Pipeline) -> tuple[Pipeline, dict[str, list[str]]]:
    """Add to each step the distributions its last successful local run imported.

    The code's own imports name the packages a step needs directly; what they import in turn
    (optional dependencies most of all: pandas behind ``load_wine(as_frame=True)``) only shows
    at run time. Each step process records the modules the notebook's code imported in its
    executed notebook; this reads the newest successful run's record of every step and pins
    those distributions at their installed versions, as the static ones are. Modules that no
    installed distribution provides (``cython_runtime``) are left out. No run: no change.

    Returns:
        The pipeline with the packages added, and step -> the added requirements.
    """
    import dataclasses
    import json

    from cellpipe.notebook.packages import resolve_modules
    from cellpipe.storage.records import StepStatus

    notebook = Path(pipeline.path).resolve()
    settings = Settings.discover(notebook.parent)
    if settings is None:
        return pipeline, {}
    wanted = {step.name for step in pipeline.steps}
    imported: dict[str, list[str]] = {}
    with open_project(settings, create=False) as project:
        for run_record in project.metadata.list_runs(notebook=str(notebook), limit=20):
            for record in project.metadata.step_runs(run_record.run_id):
                if record.step not in wanted or record.step in imported:
                    continue
                ok = record.status in (StepStatus.SUCCEEDED, StepStatus.CACHED)
                if not ok or record.notebook_digest is None:
                    continue
                try:
                    with project.artifacts.open(record.notebook_digest) as f:
                        meta = json.load(f).get("metadata", {}).get("cellpipe", {})
                except (OSError, ValueError, CellpipeError):
                    continue
                if isinstance(meta.get("imported"), list):
                    imported[record.step] = [str(m) for m in meta["imported"]]
            if len(imported) == len(wanted):
                break
    steps = []
    added: dict[str, list[str]] = {}
    for step in pipeline.steps:
        known = {p.distribution for p in step.packages} | {p.module for p in step.packages}
        extra = [
            p
            for p in resolve_modules(imported.get(step.name, ()), folder=notebook.parent)
            if p.distribution is not None and p.distribution not in known
        ]
        if extra:
            added[step.name] = sorted(r for p in extra if (r := p.requirement()) is not None)
            step = dataclasses.replace(step, packages=(*step.packages, *extra))
        steps.append(step)
    return dataclasses.replace(pipeline, steps=tuple(steps)), added


def base_image() -> str:
    """Return ``python:X.Y-slim`` for the running interpreter (pickles need the same Python)."""
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


def compile_pipeline(
    notebook: str | Path,
    *,
    image: str | None = None,
    image_from_context: bool = False,
    name: str | None = None,
    params: Iterable[str] = (),
    run_packages: bool = True,
) -> Compiled:
    """Compile a notebook to checked KFP v2 IR (the service of ``compile``, ``submit``).

    Raises:
        DefinitionError: the notebook is invalid.
        ParameterError: a ``-p`` value is unknown or ill-typed.
        CompileError: the pipeline uses something the KFP target does not support.
    """
    from cellpipe.errors import CompileError
    from cellpipe.kfp.compiler import (
        compile_documents,
        installed_kfp_version,
        with_producer_packages,
    )
    from cellpipe.kfp.dag import pipeline_name
    from cellpipe.kfp.image import build_context
    from cellpipe.kfp.validate import validate_documents
    from cellpipe.kfp.yaml import dump_yaml
    from cellpipe.pipeline.parameters import parse_assignments, resolve_parameters

    pipeline = load_pipeline(check_path(notebook))
    added: dict[str, list[str]] = {}
    if run_packages:
        pipeline, added = with_run_packages(pipeline)
    pipeline = with_producer_packages(pipeline)
    values = resolve_parameters(pipeline, text=parse_assignments(params))
    kfp_version = installed_kfp_version()
    if image_from_context:
        image = build_context(
            pipeline, kfp_version=kfp_version, base_image=base_image(), name=name
        ).tag
    # The package's version without importing the package from below it: `cellpipe` (the
    # parent of this module) is always loaded, and importing it from api would make the layer
    # check see api -> cellpipe -> whatever `cellpipe/__init__` reaches.
    version: str = sys.modules["cellpipe"].__version__
    documents = compile_documents(
        pipeline,
        image=image,
        cellpipe_version=version,
        kfp_version=kfp_version,
        name=name,
        parameters=values,
        default_image=base_image(),
    )
    problems = validate_documents(documents)
    if problems:
        raise CompileError(
            "the compiled pipeline is not valid KFP IR:\n  " + "\n  ".join(problems),
            hint="this is a bug in cellpipe's compiler; please report it with the notebook",
        )
    return Compiled(
        pipeline=pipeline,
        documents=documents,
        text=dump_yaml(documents),
        name=pipeline_name(pipeline, name),
        image=image,
        parameters=values,
        run_packages=added,
    )


def file_edge_warnings(pipeline: Pipeline) -> list[str]:
    """Say which file edges a cluster cannot honour by itself.

    Locally every step runs in the notebook's folder; on a cluster each step has its own pod,
    so a file one step writes is not where the next one reads it unless both see a shared
    volume.
    """
    found = []
    for step in pipeline.steps:
        for ref in step.files:
            found.append(
                f"step '{step.name}' reads '{ref.path}' (cell {ref.cell}, line {ref.line}), "
                f"which step '{ref.producer}' writes; on a cluster each step runs in its own "
                "pod, so put the file on a shared volume (kubeflow_notebook volumes) or pass "
                "the data as a variable"
            )
    return found


def compile(  # noqa: A001 - the command's name, as `cellpipe.compile`
    notebook: str | Path,
    output: str | Path | None = None,
    *,
    image: str | None = None,
    image_from_context: bool = False,
    name: str | None = None,
    params: Iterable[str] = (),
    run_packages: bool = True,
) -> CompileResult:
    """Write a notebook's pipeline as Kubeflow Pipelines v2 IR YAML (``cellpipe compile``).

    Args:
        notebook: the notebook.
        output: the YAML file (default: the notebook with ``.yaml``); ``"-"`` writes nothing
            (the YAML is ``.text``).
        image: the container image of every step.
        image_from_context: use the image ``cellpipe image NOTEBOOK --build`` built.
        name: the KFP pipeline name.
        params: parameter defaults to compile in, ``NAME=VALUE`` each.
        run_packages: also pin what each step's last local run imported indirectly.

    Returns:
        The summary (``cellpipe compile --json``); ``.text`` is the YAML.

    Example::

        cellpipe.compile("train.ipynb", "train.yaml", params=["MAX_DEPTH=6"])
    """
    from cellpipe.views.results import CompileResult

    compiled = compile_pipeline(
        notebook,
        image=image,
        image_from_context=image_from_context,
        name=name,
        params=params,
        run_packages=run_packages,
    )
    target = str(output) if output is not None else str(Path(notebook).with_suffix(".yaml"))
    if target != "-":
        Path(target).write_text(compiled.text, encoding="utf-8")
    document = {
        "ok": True,
        "output": target,
        "pipeline": compiled.name,
        "steps": len(compiled.pipeline.steps),
        "documents": len(compiled.documents),
        "bytes": len(compiled.text.encode()),
        "image": compiled.image,
        "parameters": compiled.parameters,
        "run_packages": compiled.run_packages,
        "warnings": file_edge_warnings(compiled.pipeline),
    }
    return CompileResult(document, compiled.text)


# -- snapshots and reproduce --------------------------------------------------------------------


def _pick_snapshot(history: Any, run_id: str, step: str | None, after: bool) -> Any:
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


def snapshots(run: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """Return a run's snapshots (``cellpipe snapshot list --json``)."""
    from cellpipe.storage.lineage import history_for

    with _opened(project) as opened:
        run_record = opened.metadata.get_run(run)
        history = history_for(opened.metadata)
        found = list(history.snapshots(run_record.run_id)) if history is not None else []
    return {"run_id": run_record.run_id, "snapshots": [s.to_json() for s in found]}


def restore_snapshot(
    run: str,
    to: str | Path,
    *,
    step: str | None = None,
    after: bool = False,
    force: bool = False,
    skip_outside_links: bool = False,
    project: str | Path | None = None,
) -> dict[str, Any]:
    """Restore a run's start snapshot, or a step's before/after one, into a folder.

    Returns:
        The ``cellpipe snapshot restore --json`` document.
    """
    from cellpipe.storage.lineage import history_for
    from cellpipe.storage.snapshots import (
        IgnoreRules,
        manifest_files,
        read_manifest,
        restore_files,
    )

    settings = _settings_of(project)
    target = Path(to)
    with open_project(settings, create=False) as opened:
        run_record = opened.metadata.get_run(run)
        snap = _pick_snapshot(history_for(opened.metadata), run_record.run_id, step, after)
        manifest = read_manifest(opened.artifacts, snap.manifest)
        files = manifest_files(opened.artifacts, manifest)
        restored = restore_files(
            opened.artifacts,
            files,
            target,
            force=force,
            ignore=IgnoreRules.for_workspace(settings.root),
            skip_outside_links=skip_outside_links,
        )
    return {
        "run_id": run_record.run_id,
        "step": step,
        "kind": snap.kind.value,
        "to": str(target.resolve()),
        "files": restored.files,
        "left_out": list(restored.left_out),
        "links_skipped": list(restored.links_skipped),
        "total_size": snap.total_size,
        "manifest": snap.manifest,
        "inputs": manifest.get("inputs", {}),
        "outputs": manifest.get("outputs", {}),
    }


def snapshot_changes(run: str, step: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """Return the files a step changed, each attributed (``cellpipe snapshot changes --json``).

    Raises:
        CellpipeError: when the step's after snapshot records no changes.
    """
    from cellpipe.storage.lineage import history_for
    from cellpipe.storage.snapshots import read_manifest

    with _opened(project) as opened:
        run_record = opened.metadata.get_run(run)
        snap = _pick_snapshot(history_for(opened.metadata), run_record.run_id, step, True)
        manifest = read_manifest(opened.artifacts, snap.manifest)
    if "changes" not in manifest:
        raise CellpipeError(
            f"the after snapshot of step '{step}' in run {run_record.run_id} records no changes",
            hint="runs recorded before cellpipe attributed changes, and runs with snapshots "
            "off (CELLPIPE_SNAPSHOT_MAX_BYTES=0), have none",
        )
    return {"run_id": run_record.run_id, "step": step, "changes": manifest["changes"]}


def reproduce(
    run: str,
    *,
    to: str | Path | None = None,
    force: bool = False,
    jobs: int | None = None,
    project: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Re-run a run from its start snapshot and compare every output (``cellpipe reproduce``).

    Args:
        run: the run id (prefix, ``latest``).
        to: the folder to restore and run in (default ``.cellpipe/reproduce/RUN``, emptied).
        force: restore into a non-empty ``to``.
        jobs: how many steps may run at once.
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).
        progress: receives one line when the re-run starts.

    Returns:
        The ``cellpipe reproduce --json`` document; ``identical`` says whether it reproduced.
    """
    import shutil

    from cellpipe.pipeline.parameters import resolve_parameters
    from cellpipe.runner.orchestrate import RunOptions, run_pipeline
    from cellpipe.storage.lineage import history_for
    from cellpipe.storage.snapshots import (
        IgnoreRules,
        environment,
        manifest_files,
        read_manifest,
        restore_files,
    )
    from cellpipe.views.reproduce import environment_changes, reproduce_document

    settings = _settings_of(project)
    with open_project(settings, create=False) as opened:
        run_record = opened.metadata.get_run(run)
        snap = _pick_snapshot(history_for(opened.metadata), run_record.run_id, None, False)
        manifest = read_manifest(opened.artifacts, snap.manifest)
        original = {s.step: s for s in opened.metadata.step_runs(run_record.run_id)}
        folder = Path(to) if to else settings.state_dir / "reproduce" / run_record.run_id
        if not to and folder.exists():
            shutil.rmtree(folder)  # our own scratch folder: start clean every time
        # A link out of the workspace (a dataset elsewhere) is not recreated: the document
        # names it, and a step that needs it fails visibly instead of reading outside.
        restored = restore_files(
            opened.artifacts,
            manifest_files(opened.artifacts, manifest),
            folder,
            force=force,
            ignore=IgnoreRules.for_workspace(settings.root),
            skip_outside_links=True,
        )
    notebook = folder / manifest["notebook"]
    pipeline = load_pipeline(notebook)
    known = {p.name for p in pipeline.parameters}
    values = resolve_parameters(
        pipeline, text={}, values={k: v for k, v in run_record.parameters.items() if k in known}
    )
    state = folder / ".cellpipe"
    local = Settings(
        root=folder.resolve(),
        db_url=f"sqlite:///{(state / 'cellpipe.db').resolve()}",
        artifacts_url=str((state / "artifacts").resolve()),
    )
    if progress is not None:
        progress(f"reproducing {run_record.run_id} in {folder} ...")
    with open_project(local) as fresh:
        report = run_pipeline(
            pipeline,
            params=values,
            artifacts=fresh.artifacts,
            metadata=fresh.metadata,
            state_dir=local.state_dir,
            options=RunOptions(use_cache=False, jobs=jobs),
        )
    document = reproduce_document(
        run_record,
        report,
        original,
        folder,
        environment_changes(manifest.get("environment"), dict(environment())),
    )
    document["left_out"] = list(restored.left_out)
    document["links_skipped"] = list(restored.links_skipped)
    return document


# -- doctor -------------------------------------------------------------------------------------


def doctor(
    *,
    repair: bool = False,
    sample: int = 50,
    project: str | Path | None = None,
    progress: Any = None,
) -> tuple[Settings, Any, Any]:
    """Check the project's stores, and with ``repair`` rebuild a damaged database.

    Returns:
        The project's settings, the check report and the repair report (None without
        ``repair``); see `cellpipe.storage.doctor`.
    """
    from cellpipe.storage.backends import is_remote_artifact_url, open_artifact_store
    from cellpipe.storage.doctor import check_project, repair_project

    settings = _settings_of(project)
    local = not is_remote_artifact_url(settings.artifacts_url)
    artifacts_root = Path(settings.artifacts_url.removeprefix("file://")) if local else None
    report = check_project(
        db_url=settings.db_url,
        artifacts_root=artifacts_root,
        state_dir=settings.state_dir,
        sample=sample,
        progress=progress,
    )
    repaired = None
    if repair:
        store = open_artifact_store(
            settings.artifacts_url,
            cache_dir=settings.cache_dir,
            storage_options=settings.storage_options(),
        )
        try:
            repaired = repair_project(
                db_url=settings.db_url,
                state_dir=settings.state_dir,
                artifacts=store,
                progress=progress,
            )
        finally:
            store.close()
    return settings, report, repaired


# -- the notebook views of objects defined below views ------------------------------------------


def register_ipython_formatters() -> bool:
    """Teach the running IPython kernel to show a `Pipeline` as HTML (its graph drawn).

    ``pipeline/`` sits below ``views/`` and may not import it, so `Pipeline` has no
    ``_repr_html_`` of its own; IPython's formatters can be told by type name instead. This
    runs when `load_pipeline` or `check` is called in IPython (never on ``import cellpipe``)
    and is idempotent; outside IPython it does nothing.

    Returns:
        True when a shell took the formatters.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    formatters = getattr(getattr(shell, "display_formatter", None), "formatters", None)
    if not formatters:
        return False
    formatters["text/html"].for_type_by_name("cellpipe.pipeline.model", "Pipeline", _pipeline_html)
    formatters["text/plain"].for_type_by_name(
        "cellpipe.pipeline.model", "Pipeline", _pipeline_pretty
    )
    return True


def _pipeline_html(pipeline: Pipeline) -> str:
    from cellpipe.views.pipeline import pipeline_html

    return pipeline_html(pipeline)


def _pipeline_pretty(pipeline: Pipeline, printer: Any, cycle: bool) -> None:
    from cellpipe.views.pipeline import pipeline_text

    printer.text(pipeline_text(pipeline))


# -- the web UI: runs, a run, its steps (issue 12, U1) ------------------------------------------
# The pages of `cellpipe ui` render what these return; like the CLI they never open a store.

UI_STATE_FILE = "ui.json"


def ui_runs_page(
    project: str | Path | None = None,
    *,
    status: str | None = None,
    params: Iterable[str] = (),
    metrics: Iterable[str] = (),
    offset: int = 0,
    limit: int = 100,
) -> dict[str, Any]:
    """One page of the runs table, newest first: ``{"runs", "offset", "limit", "has_more"}``.

    Without a parameter or metric filter only ``offset + limit + 1`` rows are read (the first
    page of 10,000 runs reads 101); with one, the newest runs are read in growing batches
    (500, then 4 times more) until enough pass it.

    Raises:
        CellpipeError: for a filter text of the wrong form (see ``cellpipe runs``).
    """
    from cellpipe.storage.lineage import RunFilter
    from cellpipe.storage.records import RunStatus
    from cellpipe.views.runs import run_document

    keep = RunFilter.parse(params=params, metrics=metrics)
    try:
        wanted = RunStatus(status) if status else None
    except ValueError:
        raise CellpipeError(
            f"unknown status '{status}'",
            hint="one of: " + ", ".join(s.value for s in RunStatus),
        ) from None
    offset = max(0, int(offset))
    limit = max(1, int(limit))
    wanted_rows = offset + limit + 1  # one more: is there a next page?
    with _opened(project) as opened:
        if not keep:
            found = list(opened.metadata.list_runs(status=wanted, limit=wanted_rows))
        else:  # read more and more of the newest runs until enough pass the filter
            read = max(500, 4 * wanted_rows)
            while True:
                batch = opened.metadata.list_runs(status=wanted, limit=read)
                found = [r for r in batch if keep.matches(r)]
                if len(found) >= wanted_rows or len(batch) < read:
                    break
                read *= 4
    window = found[offset : offset + limit]
    return {
        "runs": [run_document(r) for r in window],
        "offset": offset,
        "limit": limit,
        "has_more": len(found) > offset + limit,
    }


def run_graph(run: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """A run's steps as a graph: ``{"run_id", "status", "nodes": [GraphNode], "edges"}``.

    Nodes are the recorded step runs (state = status, detail = the cache decision); while the
    run is in progress, the notebook's steps that have not started yet are added as
    ``waiting`` (with the notebook's edges), when the notebook can still be read.
    """
    from cellpipe.views.graph import GraphNode
    from cellpipe.views.report import run_graph as graph_of

    with _opened(project) as opened:
        record = opened.metadata.get_run(run)
        steps = opened.metadata.step_runs(record.run_id)
    nodes, edges = graph_of(steps)
    if record.status.value == "running":
        try:
            pipeline = load_pipeline(record.notebook)
        except (CellpipeError, OSError, ValueError):
            pipeline = None
        if pipeline is not None:
            seen = {n.id for n in nodes}
            nodes += [
                GraphNode(id=s.name, label=s.name, state="waiting")
                for s in pipeline.steps
                if s.name not in seen
            ]
            names = {n.id for n in nodes}
            known = {(a, b) for a, b, _ in edges}
            edges += [
                (e.source, e.target, ", ".join((*e.variables, *e.files)))
                for e in pipeline.edges
                if (e.source, e.target) not in known and {e.source, e.target} <= names
            ]
    return {"run_id": record.run_id, "status": record.status.value, "nodes": nodes, "edges": edges}


def step_notebook(run: str, step: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """A step's executed cells as notebook JSON (nbformat 4); no cells when none was stored.

    Raises:
        RunNotFoundError: for an unknown run or step.
    """
    import json

    with _opened(project) as opened:
        _, record = step_record(opened, run, step)
        if record.notebook_digest is None:
            return {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        with opened.artifacts.open(record.notebook_digest) as f:
            notebook = json.load(f)
    if not isinstance(notebook, dict):
        return {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    return notebook


class ArtifactDigestError(CellpipeError):
    """A text that is not an artifact digest, or a digest the project's store does not have."""

    headline = "no such artifact"


def artifact_file(digest: str, *, project: str | Path | None = None) -> Path:
    """The local file holding an artifact's bytes, checked against its digest.

    Args:
        digest: ``sha256:<64 hex>``.
        project: a folder inside the project.

    Raises:
        ArtifactDigestError: when ``digest`` is not of that form or the store lacks it.
    """
    from cellpipe.storage.artifacts import parse_digest
    from cellpipe.storage.protocols import ArtifactDigest

    try:
        parse_digest(digest)
    except ValueError as error:
        raise ArtifactDigestError(str(error)) from None
    with _opened(project) as opened:
        key = ArtifactDigest(digest)
        if not opened.artifacts.exists(key):
            raise ArtifactDigestError(f"the project has no artifact {digest}")
        return opened.artifacts.local_path(key)


def register_ui(url: str, *, project: str | Path | None = None) -> Path:
    """Record a running UI's URL (with its token) in ``.cellpipe/ui.json`` (private folder)."""
    import json
    import os

    settings = _settings_of(project)
    _private_state_dir(settings)
    path = settings.state_dir / UI_STATE_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": url, "pid": os.getpid()}, f)
    tmp.replace(path)
    return path


def unregister_ui(*, project: str | Path | None = None) -> None:
    """Remove ``.cellpipe/ui.json`` when it names this process."""
    import json
    import os

    path = _settings_of(project).state_dir / UI_STATE_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def ui_url(path: str = "/", *, project: str | Path | None = None) -> str | None:
    """The deep link to ``path`` in the project's running UI (``cellpipe ui``), or None.

    Example::

        cellpipe.ui_url(f"/runs/{run_id}")  # 'http://127.0.0.1:8765/runs/...?token=...'
    """
    import json
    import os
    from urllib.parse import urlsplit, urlunsplit

    try:
        settings = _settings_of(project)
        state = json.loads((settings.state_dir / UI_STATE_FILE).read_text(encoding="utf-8"))
        url, pid = str(state["url"]), int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError, CellpipeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def ui_link(path: str = "/", *, project: str | Path | None = None) -> str | None:
    """`ui_url` without its token: the link the notebook views show.

    A notebook's outputs are saved in the ``.ipynb`` and shared; the token is not. A browser
    that opened the UI once (``cellpipe ui`` prints the URL with the token) has its cookie.
    """
    from urllib.parse import urlsplit, urlunsplit

    url = ui_url(path, project=project)
    if url is None:
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# -- the web UI: live runs (issue 12, U2) ---------------------------------------------------------

#: Folders never searched for notebooks: cellpipe's state, VCS, environments and caches.
_NOT_NOTEBOOK_DIRS = frozenset(
    {".cellpipe", ".git", ".hg", ".venv", "venv", "__pycache__", "node_modules", "build", "dist"}
)
_MAX_NOTEBOOKS = 1000


def project_notebooks(project: str | Path | None = None) -> list[str]:
    """Return the notebooks of the project, as paths relative to its root (``/``-separated).

    The ``.ipynb`` files and percent scripts (``.py`` files with a ``# %%`` line) under the
    project root, outside ``.cellpipe``, hidden folders, environments and build folders; at
    most 1000, sorted.

    Args:
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).
    """
    root = _settings_of(project).root.resolve()
    found: list[str] = []
    for folder, dirs, files in _walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _NOT_NOTEBOOK_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = folder / name
            if name.endswith(".ipynb") or (name.endswith(".py") and _is_percent_script(path)):
                found.append(path.relative_to(root).as_posix())
                if len(found) >= _MAX_NOTEBOOKS:
                    return sorted(found)
    return sorted(found)


def _walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    import os

    for folder, dirs, files in os.walk(root, followlinks=False):
        yield Path(folder), dirs, files


def _is_percent_script(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = handle.read(65536)
    except OSError:
        return False
    return any(line.startswith("# %%") for line in head.splitlines())


def project_notebook(notebook: str | Path, *, project: str | Path | None = None) -> Path:
    """Return a project-relative notebook path as an absolute path inside the project.

    Raises:
        NotebookNotFoundError: when the path leaves the project, lies in ``.cellpipe`` or
            names no file.
    """
    root = _settings_of(project).root.resolve()
    text = str(notebook)
    candidate = (root / text).resolve()
    if not candidate.is_relative_to(root) or Path(text).is_absolute():
        raise NotebookNotFoundError(
            text, reason="not a notebook of this project", hint="pick one under " + str(root)
        )
    if ".cellpipe" in candidate.relative_to(root).parts:
        raise NotebookNotFoundError(text, reason="inside .cellpipe, not a notebook of the project")
    return check_path(candidate)


def run_form(notebook: str | Path, *, project: str | Path | None = None) -> dict[str, Any]:
    """Return what a start-run form needs for one notebook of the project.

    Returns:
        ``{"notebook": relative path, "ok": bool, "parameters": [{name, type, default, cell,
        line}], "error": message or None}``: the declared parameters, typed, with their
        defaults; ``ok`` is False (and ``error`` says why) when the notebook is invalid.
    """
    text = str(notebook)
    try:
        path = project_notebook(text, project=project)
    except CellpipeError as error:
        return {"notebook": text, "ok": False, "parameters": [], "error": str(error)}
    checked = check(path)
    pipeline = checked.pipeline
    if pipeline is None:
        problem = checked.error
        return {
            "notebook": text,
            "ok": False,
            "parameters": [],
            "error": str(problem) if problem is not None else "not a valid pipeline",
        }
    return {
        "notebook": text,
        "ok": True,
        "parameters": [p.to_json() for p in pipeline.parameters],
        "error": None,
    }


@dataclass(frozen=True, slots=True)
class RunCommand:
    """How to start ``cellpipe run NOTEBOOK --json`` for the UI (a process, not a call).

    Attributes:
        notebook: the notebook, absolute.
        argv: the command line (this interpreter, ``-m cellpipe run``, ``--json``, ``-p``).
        cwd: the notebook's folder.
        env: the variables to add to the environment: the UI project's stores, so that a
            notebook in a sub-folder records its run where the UI reads.
    """

    notebook: Path
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]


def run_command(
    notebook: str | Path,
    params: Mapping[str, str] | None = None,
    *,
    project: str | Path | None = None,
) -> RunCommand:
    """Check a run request from the UI and return the command that starts it.

    Args:
        notebook: the notebook, relative to the project root.
        params: parameter overrides as text (``NAME -> VALUE``, as ``-p NAME=VALUE``).
        project: a folder inside the project.

    Raises:
        NotebookNotFoundError: the notebook is not a file of the project.
        PipelineValidationError: the notebook is not a valid pipeline.
        ParameterError: an unknown parameter or a value not of its declared type.
    """
    from cellpipe.pipeline.parameters import resolve_parameters

    settings = _settings_of(project)
    path = project_notebook(notebook, project=project)
    pipeline = load_pipeline(path)
    text = {str(k): str(v) for k, v in (params or {}).items()}
    resolve_parameters(pipeline, text=text)
    argv = [sys.executable, "-m", "cellpipe", "run", path.name, "--json"]
    for name, value in text.items():
        argv += ["-p", f"{name}={value}"]
    env = {"CELLPIPE_DB_URL": settings.db_url, "CELLPIPE_ARTIFACTS_URL": settings.artifacts_url}
    if settings.s3_endpoint_url:
        env["CELLPIPE_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return RunCommand(notebook=path, argv=tuple(argv), cwd=path.parent, env=env)


def run_progress(run: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """Return where a run is: its status and each recorded step's state (cheap, for polling).

    Returns:
        ``{"run_id", "status", "notebook", "parameters", "metrics", "error", "steps": [{"step",
        "status", "reason", "duration_s", "error"}]}``; steps in the order they were recorded.

    Raises:
        RunNotFoundError: no such run.
    """
    with _opened(project) as opened:
        record = opened.metadata.get_run(run)
        steps = opened.metadata.step_runs(record.run_id)
    rows = []
    for step in steps:
        duration = None
        if step.started_at is not None and step.finished_at is not None:
            duration = (step.finished_at - step.started_at).total_seconds()
        rows.append(
            {
                "step": step.step,
                "status": step.status.value,
                "reason": step.cache_reason,
                "duration_s": duration,
                "error": step.error,
            }
        )
    return {
        "run_id": record.run_id,
        "status": record.status.value,
        "notebook": record.notebook,
        "parameters": dict(record.parameters),
        "metrics": dict(record.metrics),
        "error": record.error,
        "steps": rows,
    }


_NAME_PART = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def step_log_since(
    run_id: str,
    step: str,
    offset: int = 0,
    *,
    project: str | Path | None = None,
    limit: int = 1 << 20,
) -> tuple[str, int]:
    """Return a step's log text written since byte ``offset`` (also while it runs).

    Reads the step's log file in the project's run folder (``.cellpipe/runs/RUN/steps/STEP``),
    at most ``limit`` bytes, ending at a whole UTF-8 character.

    Returns:
        ``(text, new_offset)``; ``("", offset)`` when there is no log (yet).
    """
    if not run_id or not step or not set(run_id + step) <= _NAME_PART or ".." in run_id + step:
        return "", offset
    from cellpipe.runner.jobs import LOG_NAME

    path = _settings_of(project).state_dir / "runs" / run_id / "steps" / step / LOG_NAME
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(limit)
    except OSError:
        return "", offset
    cut = len(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.reason == "unexpected end of data":  # a character cut at the end: later
            cut = error.start
    return data[:cut].decode("utf-8", errors="replace"), offset + cut


# --- issue 13: registry (part R) ---------------------------------------------------------------


def _version_of(ref: str, action: str) -> tuple[str, int]:
    """``NAME:VERSION`` -> (name, version); any other form is refused for ``action``."""
    from cellpipe.errors import InvalidModelRefError
    from cellpipe.registry.model import parse_model_ref

    parsed = parse_model_ref(ref)
    if parsed.version is None:
        raise InvalidModelRefError(
            f"{action} needs one version named by its number, not {ref!r}",
            hint=f"write {parsed.name}:VERSION; `cellpipe models show {parsed.name}` lists them",
        )
    return parsed.name, parsed.version


def archive_model_version(ref: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """Archive a version (``cellpipe models archive NAME:VERSION``).

    An archived version is skipped when ``NAME`` or ``NAME@latest`` is resolved (by
    `load_model`, `cellpipe serve NAME`) and cannot get an alias; ``NAME:VERSION`` still
    names and loads it. Archiving an archived version changes nothing.

    Returns:
        The version's document, with ``"changed"``: whether it was not archived before.

    Raises:
        RegistryError: for a reference that is not ``NAME:VERSION``, or a version an alias
            points at (the aliases are named, with how to move them).
        ModelNotFoundError: for an unknown model or version.
    """
    return _set_archived(ref, True, project)


def unarchive_model_version(ref: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """Bring an archived version back (``cellpipe models unarchive NAME:VERSION``).

    Returns:
        The version's document, with ``"changed"``: whether it was archived before.
    """
    return _set_archived(ref, False, project)


def _set_archived(ref: str, archived: bool, project: str | Path | None) -> dict[str, Any]:
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.views.models import version_document

    name, number = _version_of(ref, "archive" if archived else "unarchive")
    with _opened(project) as opened:
        registry = ModelRegistry(opened.metadata, opened.artifacts)
        before = registry.resolve(ref).archived
        change = registry.archive if archived else registry.unarchive
        version = change(name, number)
    return {**version_document(version), "changed": before != archived}


def delete_model_version(ref: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """Delete a version (``cellpipe models delete NAME:VERSION --yes``).

    Its number is never given again; its bytes stay in the content-addressed artifact store
    (step outputs and other versions may share them); the alias history that names it stays.

    Returns:
        The deleted version's document, as it was.

    Raises:
        RegistryError: for a reference that is not ``NAME:VERSION``, or a version an alias
            points at (the aliases are named, with how to move them).
        ModelNotFoundError: for an unknown model or version.
    """
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.views.models import version_document

    name, number = _version_of(ref, "delete")
    with _opened(project) as opened:
        registry = ModelRegistry(opened.metadata, opened.artifacts)
        version = registry.delete_version(name, number)
    return {**version_document(version), "deleted": True}


def tag_model_version(
    ref: str,
    tags: Mapping[str, str],
    remove: Sequence[str] = (),
    *,
    project: str | Path | None = None,
) -> dict[str, Any]:
    """Set and remove tags on the version ``ref`` names (``cellpipe models tag``).

    Args:
        ref: any reference (``wine:3``, ``wine@production``, ``wine``).
        tags: key -> value to set (keys: letters, digits, ``_ - . /``, from a letter or ``_``).
        remove: keys to remove (each must be set).
        project: a folder inside the project (default: ``CELLPIPE_PROJECT``, else the cwd).

    Returns:
        The version's document, with its tags after the change.

    Raises:
        RegistryError: for an invalid key or value, or a key to remove that is not set.
        ModelNotFoundError: for an unknown model, version or alias.
    """
    from cellpipe.registry.model import check_tag
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.views.models import version_document

    for key, value in tags.items():  # before opening anything: a typo costs nothing
        check_tag(key, value)
    for key in remove:
        check_tag(key)
    with _opened(project) as opened:
        registry = ModelRegistry(opened.metadata, opened.artifacts)
        target = registry.resolve(ref)
        version = registry.set_tags(target.name, target.version, tags, remove)
    return version_document(version)


def describe_model_version(
    ref: str, description: str, *, model: bool = False, project: str | Path | None = None
) -> dict[str, Any]:
    """Replace the description of the version ``ref`` names, or of the model (``model``).

    Returns:
        The version's document; with ``model``, ``{"name": ..., "description": ...}``.

    Raises:
        ModelNotFoundError: for an unknown model, version or alias.
    """
    from cellpipe.registry.model import parse_model_ref
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.views.models import version_document

    parsed = parse_model_ref(ref)
    with _opened(project) as opened:
        registry = ModelRegistry(opened.metadata, opened.artifacts)
        if model:
            if parsed.version is not None or parsed.alias is not None:
                from cellpipe.errors import InvalidModelRefError

                raise InvalidModelRefError(
                    f"a model's description is set by its name, not {ref!r}",
                    hint=f"cellpipe models describe {parsed.name} TEXT --model",
                )
            registry.describe(parsed.name, None, description)
            return {"name": parsed.name, "description": description}
        target = registry.resolve(parsed)
        version = registry.describe(target.name, target.version, description)
        assert version is not None
    return version_document(version)


def model_versions(name: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """Return a model and every version of it not deleted, archived ones too (oldest first).

    Returns:
        ``{"name", "description", "latest", "versions": [version documents]}``.

    Raises:
        RegistryError: for an invalid name.
        ModelNotFoundError: for an unknown model.
    """
    from cellpipe.registry.model import check_model_name
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.registry.store import unknown_model
    from cellpipe.views.models import version_document

    check_model_name(name)
    with _opened(project) as opened:
        registry = ModelRegistry(opened.metadata, opened.artifacts)
        listed = {m.name: m for m in registry.list_models()}
        if name not in listed:
            raise unknown_model(name, sorted(listed))
        versions = registry.versions(name)
    return {
        "name": name,
        "description": listed[name].description,
        "latest": listed[name].latest,
        "versions": [version_document(v) for v in versions],
    }


# --- issue 13: KServe manifests and the model-serving image ---

if TYPE_CHECKING:
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.serving.manifest import KServeManifest
    from cellpipe.storage.images import ImageContext


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestWritten:
    """A KServe manifest written by `write_kserve_manifest`.

    Attributes:
        path: the file written.
        version: the version it serves.
        manifest: the document and what was decided (`cellpipe.serving.manifest.KServeManifest`).
    """

    path: Path
    version: ModelVersion
    manifest: KServeManifest

    def to_dict(self) -> dict[str, Any]:
        """The ``serve --manifest --json`` document."""
        return {
            "manifest": str(self.path),
            "model": self.version.ref,
            "predictor": self.manifest.predictor,
            "image": self.manifest.image,
            "storage_uri": self.manifest.storage_uri,
            "placeholder": self.manifest.placeholder,
            "notes": list(self.manifest.notes),
            "warnings": list(self.manifest.warnings),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelImage:
    """The build context of a model-serving image (``cellpipe image --model``).

    Attributes:
        version: the version the image serves (the exported registry keeps its number).
        tag: ``cellpipe-model-<name>:<digest of the context's files>``.
        directory: the context folder.
        files: the files written (Dockerfile, requirements.txt, cellpipe-model.json).
        project: the exported one-version project inside the context.
        requirements: the pinned requirements.
        command: the build command run, or None without ``build``.
    """

    version: ModelVersion
    tag: str
    directory: Path
    files: list[Path]
    project: Path
    requirements: tuple[str, ...]
    command: list[str] | None

    def to_dict(self) -> dict[str, Any]:
        """The ``image --model --json`` document."""
        return {
            "ok": True,
            "model": self.version.ref,
            "tag": self.tag,
            "directory": str(self.directory),
            "files": [str(f) for f in self.files],
            "project": str(self.project),
            "requirements": list(self.requirements),
            "built": self.command is not None,
            "command": self.command,
        }


def model_packages(version: ModelVersion) -> dict[str, str]:
    """Return distribution -> version that loading ``version``'s object needs.

    The version's recorded packages (`cellpipe.registry.packages`, from its run); for a version
    registered before they were recorded, the distributions of the object's top-level module,
    its serializer's and numpy, with their requirements, at the versions installed here. A
    recorded list that lacks its serializer's package gets it the same way.
    """
    from cellpipe.registry.packages import SERIALIZER_PACKAGES, distribution_of, with_requirements

    packages = {str(k): str(v) for k, v in version.packages.items()}
    module = version.artifact.type_name.split(".", 1)[0]
    serializer = SERIALIZER_PACKAGES.get(version.artifact.serializer)
    wanted = [serializer] if serializer else []
    if not packages:
        found = distribution_of(module) if module not in ("", "builtins", "__main__") else None
        wanted += [*([found] if found else []), "numpy"]
    known = {_normalized_dist(name) for name in packages}
    for name, installed in with_requirements(wanted).items():
        if _normalized_dist(name) not in known:
            packages[name] = installed
    return packages


def _normalized_dist(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _cellpipe_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("cellpipe")


def model_image_context(version: ModelVersion, *, base: str | None = None) -> ImageContext:
    """Return the build context (`cellpipe.storage.images.ImageContext`) serving ``version``.

    Pure: nothing is written; `write_kserve_manifest` derives the image's tag from it.
    """
    from cellpipe.serving.image import model_context

    return model_context(
        version,
        packages=model_packages(version),
        cellpipe=_cellpipe_version(),
        base_image=base or base_image(),
    )


def model_image(
    ref: str,
    output: str | Path | None = None,
    *,
    project: str | Path | None = None,
    build: bool = False,
    base: str | None = None,
) -> ModelImage:
    """Write the build context of an image serving one model version (``image --model``).

    The context holds a Dockerfile (``cellpipe serve NAME:N`` on port 8080 as an unprivileged
    user), the pinned ``requirements.txt`` (`model_packages` + ``cellpipe[serve]``),
    ``cellpipe-model.json`` and ``project/``: a new project whose registry has just this
    version, copied with `ModelRegistry.copy_version`, so the container answers with the same
    ``model_version``. Running it again on the same folder reuses the export.

    Args:
        ref: the model reference (NAME, NAME:N, NAME@ALIAS); the image serves the version it
            resolves to now.
        output: the context folder (default: ``NAME-N-image`` in the working directory).
        project: the project holding the registry.
        build: also build it with docker, podman or buildah.
        base: the ``FROM`` image (default ``python:X.Y-slim`` of this interpreter).

    Raises:
        ServingError: the folder already holds another registry, or a package cannot be
            pinned.
        CellpipeError: no build tool, or the build failed (with ``build``).
    """
    from cellpipe.registry.registry import ModelRegistry
    from cellpipe.serving.image import PROJECT_FOLDER
    from cellpipe.storage.images import build_image, write_context

    with _opened(project) as opened:
        source = ModelRegistry(opened.metadata, opened.artifacts)
        version = source.resolve(ref)
        directory = Path(output) if output else Path(f"{version.name}-{version.version}-image")
        context = model_image_context(version, base=base)
        exported = directory / PROJECT_FOLDER
        _export_version(version, source, exported)
    files = write_context(context, directory)
    command = build_image(context, directory) if build else None
    return ModelImage(
        version=version,
        tag=context.tag,
        directory=directory,
        files=files,
        project=exported,
        requirements=context.requirements,
        command=command,
    )


def _export_version(version: ModelVersion, source: ModelRegistry, folder: Path) -> None:
    from cellpipe.errors import ServingError
    from cellpipe.registry.registry import ModelRegistry

    settings = Settings.for_notebook(folder / "_", env={})  # local stores, whatever the env says
    with open_project(settings) as target:
        registry = ModelRegistry(target.metadata, target.artifacts)
        models = [m.name for m in registry.list_models()]
        if models == [version.name] and [v.version for v in registry.versions(version.name)] == [
            version.version
        ]:
            return  # this very export, written before
        others = models
        if others:
            raise ServingError(
                f"{folder} already holds a registry ({', '.join(others)}), not just {version.ref}",
                hint="write the context to a new folder with -o",
            )
        registry.copy_version(version, source)
