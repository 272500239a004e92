"""What a step process is given (`StepJob`) and what it hands back (`StepResult`).

Owns: the two values that cross the process boundary between the scheduler and a step
process, and their JSON form (the fork server and the spawn child read and write them as
JSON; nothing is pickled across the boundary).

Invariants: a `StepJob` is self-contained: the step's code, the imports and functions cells,
every parameter value (values, never pasted into code), the input artifacts, the notebook
path and working directory, where the artifact store is (its URL and non-secret options:
credentials reach step processes through the inherited environment, never through a job) and
a scratch folder owned by this one step. Everything the step process writes goes under the
scratch folder (log, executed notebook, result) or into the artifact store. A `StepResult`
names only stored artifacts, never live values.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cellpipe.pipeline.model import CodeChunk, JsonValue, Pipeline
from cellpipe.runner._bare import MPL_BACKEND
from cellpipe.storage.backends import ArtifactLocation
from cellpipe.storage.records import ArtifactRef, StepStatus

__all__ = [
    "EXIT_RESULT_UNWRITABLE_FAILED",
    "EXIT_RESULT_UNWRITABLE_OK",
    "EXTRAS_NAME",
    "EXTRA_VALUES_ENV",
    "EXTRA_VALUES_MAX_BYTES",
    "EXTRA_VALUES_MAX_ENV",
    "LOG_NAME",
    "MPL_BACKEND",
    "NOTEBOOK_NAME",
    "RESULT_NAME",
    "ExtraValues",
    "StepJob",
    "StepResult",
    "code_needs_shell",
    "needs_shell",
    "pipeline_needs_shell",
]

LOG_NAME = "log.txt"
"""The step's stdout and stderr, in its scratch folder."""
NOTEBOOK_NAME = "executed.ipynb"
"""The executed notebook of the step, in its scratch folder."""
RESULT_NAME = "result.json"
"""Where a step process writes its `StepResult`, in its scratch folder."""
EXTRAS_NAME = "extras.json"
"""Where a step process reports the extra values it stored after its result (`ExtraValues`)."""
EXTRA_VALUES_ENV = "CELLPIPE_EXTRA_VALUES"
"""``0`` stores only the values later steps read, for the whole run (default ``1``)."""
EXTRA_VALUES_MAX_ENV = "CELLPIPE_EXTRA_VALUES_MAX_BYTES"
"""The size limit of one extra value, in bytes (default `EXTRA_VALUES_MAX_BYTES`)."""
EXTRA_VALUES_MAX_BYTES = 100 * 1024 * 1024
"""Default size limit of one extra value as stored: larger ones are skipped with a note."""
EXIT_RESULT_UNWRITABLE_OK = 74
"""Exit code of a step process that succeeded but could not write its result (disk full or
read-only; 74 is sysexits' EX_IOERR). The parent then knows the outcome it cannot read."""
EXIT_RESULT_UNWRITABLE_FAILED = 75
"""Exit code of a step process whose step failed and whose result could not be written."""

# Names whose use means the code talks to IPython (``display`` is a builtin in Jupyter).
_SHELL_NAMES = frozenset({"display", "get_ipython", "__IPYTHON__"})
_SHELL_MODULES = frozenset({"IPython", "ipywidgets"})


def code_needs_shell(code: str) -> bool:
    """`needs_shell` of one cell's Python code (magics already transformed)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return True  # the step fails anyway; keep Jupyter's behaviour for its message
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        value = tree.body[-1].value
        is_print = (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "print"
        )
        if not is_print and not code.rstrip().endswith(";"):
            return True  # Jupyter shows the last expression's value: IPython formats it
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in _SHELL_NAMES:
            return True
        if isinstance(node, ast.Import):
            if any(alias.name.split(".")[0] in _SHELL_MODULES for alias in node.names):
                return True
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module is not None
            and node.module.split(".")[0] in _SHELL_MODULES
        ):
            return True
    return False


def needs_shell(chunks: Iterable[CodeChunk]) -> bool:
    """Return whether running ``chunks`` may need an IPython shell.

    True when a cell (in its magics-transformed form) shows its last expression's value,
    uses ``display``, ``get_ipython`` (magics and ``!cmd`` become calls to it) or
    ``__IPYTHON__``, or imports IPython or ipywidgets. A process whose code needs none of
    these does without IPython (about 0.13 s to import); a call the analysis cannot see
    (``eval``, say) still gets a shell, created at first use.
    """
    return any(code_needs_shell(chunk.python) for chunk in chunks)


def pipeline_needs_shell(pipeline: Pipeline) -> bool:
    """Return `needs_shell` of every code chunk of ``pipeline`` (preamble and steps)."""
    steps = (chunk for step in pipeline.steps for chunk in step.code)
    return needs_shell((*pipeline.imports, *pipeline.functions, *steps))


def _chunk_to_json(chunk: CodeChunk) -> dict[str, Any]:
    return {"cell": chunk.cell, "source": chunk.source, "python": chunk.python}


def _chunk_from_json(data: Mapping[str, Any]) -> CodeChunk:
    return CodeChunk(cell=int(data["cell"]), source=data["source"], python=data["python"])


@dataclass(frozen=True, slots=True, kw_only=True)
class StepJob:
    """Everything one step process needs to run one step.

    Attributes:
        step: the step name.
        cells: the step's code chunks, in notebook order.
        preamble: the imports cells then the functions cells, run before the step's code
            (once per run by the fork server, once per step by the spawn executor).
        notebook: the notebook file (absolute path); its name appears in tracebacks.
        workdir: the working directory of the step (the notebook's folder, as in Jupyter);
            also the workspace whose files the step reads are recorded.
        params: every pipeline parameter's value for this run.
        inputs: variable name -> stored value to load before the step's code runs.
        outputs: the variables to store after the step's code ran.
        metrics: the pipeline-metrics names this step produces; their JSON-able values are
            reported in `StepResult.pipeline_metrics`.
        artifact_root: the artifact store's URL: a local folder (``.cellpipe/artifacts``)
            or ``s3://bucket/prefix``.
        scratch_dir: a folder private to this step run (log, executed notebook, result).
        run_id: the run's id, available to user code through `cellpipe.runner.context`.
        artifact_cache: the local read cache of a remote artifact store (empty when local).
        storage_options: a remote artifact store's non-secret options (``endpoint_url``).
        shell: whether a process running the run's steps should build its IPython shell
            before any user code runs (`needs_shell` of the whole pipeline). Without it,
            the shell is built only when user code first needs it.
        definitions: the classes the step's ancestors defined, each step's as one stored
            ``{name: class}`` value; ``__main__`` finds them on first use (``pickle.load`` of
            an instance written by an earlier step), as Jupyter keeps them alive.
        guarded: the inputs whose content is fingerprinted before and after the step's code
            (a later step reads them from the same producer, or they are metrics): a change
            the static analysis did not see fails the step (`cellpipe.runner._guard`).
        keep_processes: leave the processes the step started running when it ends (the
            ``processes:keep`` tag); by default its process group is stopped
            (`cellpipe.runner._groups`).
        offline: ``cellpipe.data`` uses a stored copy without asking the source
            (``--offline``); only a source never fetched is read.
        extras: the other variables the step binds at top level (`Step.binds`), stored
            after the step reported its result so dependants do not wait for them; values
            that are modules, functions, classes, unserializable or larger than
            ``extras_max_bytes`` are skipped with a note (`ExtraValues`).
        extras_max_bytes: the size limit of one extra value as stored.
    """

    step: str
    cells: tuple[CodeChunk, ...]
    preamble: tuple[CodeChunk, ...]
    notebook: str
    workdir: str
    params: Mapping[str, JsonValue]
    inputs: Mapping[str, ArtifactRef]
    outputs: tuple[str, ...]
    artifact_root: str
    scratch_dir: str
    metrics: tuple[str, ...] = ()
    run_id: str = ""
    artifact_cache: str = ""
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    shell: bool = True
    guarded: tuple[str, ...] = ()
    definitions: tuple[ArtifactRef, ...] = ()
    keep_processes: bool = False
    offline: bool = False
    extras: tuple[str, ...] = ()
    extras_max_bytes: int = EXTRA_VALUES_MAX_BYTES

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))
        object.__setattr__(self, "storage_options", MappingProxyType(dict(self.storage_options)))

    @property
    def artifacts(self) -> ArtifactLocation:
        """Where the artifact store is (open it with ``.open()``)."""
        return ArtifactLocation(
            url=self.artifact_root,
            cache_dir=self.artifact_cache,
            storage_options=dict(self.storage_options),
        )

    @property
    def log_path(self) -> Path:
        """The step's stdout and stderr (appended to while it runs)."""
        return Path(self.scratch_dir) / LOG_NAME

    @property
    def notebook_path(self) -> Path:
        """The executed notebook of the step."""
        return Path(self.scratch_dir) / NOTEBOOK_NAME

    @property
    def result_path(self) -> Path:
        """Where the step process writes its result."""
        return Path(self.scratch_dir) / RESULT_NAME

    @property
    def extras_path(self) -> Path:
        """Where the step process reports its extra values (after its result)."""
        return Path(self.scratch_dir) / EXTRAS_NAME

    def setup_key(self) -> str:
        """Return a digest of what a warm process shares between steps.

        Two jobs with the same key can be forked from the same warm process: same preamble,
        parameters, notebook, working directory and artifact store.
        """
        shared = {
            "preamble": [_chunk_to_json(c) for c in self.preamble],
            "params": dict(self.params),
            "notebook": self.notebook,
            "workdir": self.workdir,
            "artifact_root": self.artifact_root,
            "artifact_cache": self.artifact_cache,
            "storage_options": dict(self.storage_options),
        }
        text = json.dumps(shared, sort_keys=True, separators=(",", ":"), default=repr)
        return hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (what crosses the process boundary)."""
        return {
            "step": self.step,
            "cells": [_chunk_to_json(c) for c in self.cells],
            "preamble": [_chunk_to_json(c) for c in self.preamble],
            "notebook": self.notebook,
            "workdir": self.workdir,
            "params": dict(self.params),
            "inputs": {name: ref.to_json() for name, ref in self.inputs.items()},
            "outputs": list(self.outputs),
            "metrics": list(self.metrics),
            "artifact_root": self.artifact_root,
            "artifact_cache": self.artifact_cache,
            "storage_options": dict(self.storage_options),
            "scratch_dir": self.scratch_dir,
            "run_id": self.run_id,
            "shell": self.shell,
            "guarded": list(self.guarded),
            "definitions": [ref.to_json() for ref in self.definitions],
            "keep_processes": self.keep_processes,
            "offline": self.offline,
            "extras": list(self.extras),
            "extras_max_bytes": self.extras_max_bytes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepJob:
        """Build from the dict `to_json` returns."""
        return cls(
            step=data["step"],
            cells=tuple(_chunk_from_json(c) for c in data["cells"]),
            preamble=tuple(_chunk_from_json(c) for c in data["preamble"]),
            notebook=data["notebook"],
            workdir=data["workdir"],
            params=data["params"],
            inputs={k: ArtifactRef.from_json(v) for k, v in data["inputs"].items()},
            outputs=tuple(data["outputs"]),
            metrics=tuple(data.get("metrics", ())),
            artifact_root=data["artifact_root"],
            scratch_dir=data["scratch_dir"],
            run_id=data.get("run_id", ""),
            artifact_cache=data.get("artifact_cache", ""),
            storage_options=data.get("storage_options", {}),
            shell=bool(data.get("shell", True)),
            guarded=tuple(data.get("guarded", ())),
            definitions=tuple(ArtifactRef.from_json(d) for d in data.get("definitions", ())),
            keep_processes=bool(data.get("keep_processes", False)),
            offline=bool(data.get("offline", False)),
            extras=tuple(data.get("extras", ())),
            extras_max_bytes=int(data.get("extras_max_bytes", EXTRA_VALUES_MAX_BYTES)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    """How one step ended.

    Attributes:
        step: the step name.
        status: succeeded or failed when it ran; cached, skipped or cancelled otherwise.
        outputs: output variable -> stored value (all declared outputs when it succeeded).
        metrics: values the step passed to ``cellpipe.log_metric``.
        pipeline_metrics: JSON-able values of the job's ``metrics`` names (numbers, strings,
            booleans; numpy scalars converted), for the orchestrator's run metrics.
        error: one line naming the error and where (notebook, cell, line), when failed; the
            reason, when skipped or cached.
        traceback: the traceback as the user should see it (cellpipe frames removed).
        notebook_path: the executed notebook (.ipynb, nbformat v4) of the step, if written.
        log_path: the step's stdout and stderr, if any.
        files_read: workspace-relative paths of the files the step opened for reading.
        files_written: workspace-relative paths of the files the step opened for writing
            (and that exist when it ends).
        definitions: the classes the step defined at top level, stored as one value, if any.
        duration_s: time spent in the step process (0 when it did not run), its imports
            included: the imports and functions cells it ran, or the warm server ran for it.
        hint: how to fix the error, when there is something to say.
    """

    step: str
    status: StepStatus
    outputs: Mapping[str, ArtifactRef] = field(default_factory=dict)
    metrics: Mapping[str, JsonValue] = field(default_factory=dict)
    pipeline_metrics: Mapping[str, JsonValue] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    notebook_path: str | None = None
    log_path: str | None = None
    files_read: tuple[str, ...] = ()
    files_written: tuple[str, ...] = ()
    duration_s: float = 0.0
    hint: str | None = None
    definitions: ArtifactRef | None = None

    def __post_init__(self) -> None:
        for name in ("outputs", "metrics", "pipeline_metrics"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def ok(self) -> bool:
        """True when downstream steps may run (succeeded or cached)."""
        return self.status in (StepStatus.SUCCEEDED, StepStatus.CACHED)

    @classmethod
    def cached(
        cls, step: str, outputs: Mapping[str, ArtifactRef], *, reason: str = "hit"
    ) -> StepResult:
        """Return the result of a cache hit (what `prepare` returns instead of a job).

        Args:
            step: the step name.
            outputs: the reused outputs.
            reason: the cache decision in words, shown in the `StepCached` event.
        """
        return cls(step=step, status=StepStatus.CACHED, outputs=outputs, error=reason)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "step": self.step,
            "status": self.status.value,
            "outputs": {name: ref.to_json() for name, ref in self.outputs.items()},
            "metrics": dict(self.metrics),
            "pipeline_metrics": dict(self.pipeline_metrics),
            "error": self.error,
            "traceback": self.traceback,
            "notebook_path": self.notebook_path,
            "log_path": self.log_path,
            "files_read": list(self.files_read),
            "files_written": list(self.files_written),
            "duration_s": self.duration_s,
            "hint": self.hint,
            "definitions": None if self.definitions is None else self.definitions.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepResult:
        """Build from the dict `to_json` returns."""
        return cls(
            step=data["step"],
            status=StepStatus(data["status"]),
            outputs={k: ArtifactRef.from_json(v) for k, v in data["outputs"].items()},
            metrics=data.get("metrics", {}),
            pipeline_metrics=data.get("pipeline_metrics", {}),
            error=data.get("error"),
            traceback=data.get("traceback"),
            notebook_path=data.get("notebook_path"),
            log_path=data.get("log_path"),
            files_read=tuple(data.get("files_read", ())),
            files_written=tuple(data.get("files_written", ())),
            duration_s=float(data.get("duration_s", 0.0)),
            hint=data.get("hint"),
            definitions=(
                ArtifactRef.from_json(data["definitions"]) if data.get("definitions") else None
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtraValues:
    """The values a step bound that nothing downstream reads, stored after its result.

    Attributes:
        outputs: variable -> stored value.
        skipped: variable -> why it was not stored (a module, a function, too large...).
    """

    outputs: Mapping[str, ArtifactRef] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "outputs": {name: ref.to_json() for name, ref in self.outputs.items()},
            "skipped": dict(self.skipped),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExtraValues:
        """Build from the dict `to_json` returns."""
        return cls(
            outputs={k: ArtifactRef.from_json(v) for k, v in data.get("outputs", {}).items()},
            skipped=dict(data.get("skipped", {})),
        )
