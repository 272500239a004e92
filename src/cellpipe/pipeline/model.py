"""The immutable pipeline model: Pipeline, Step, Edge, Parameter, Metric.

Owns: the definition types every other layer consumes (the runner runs a `Pipeline`, the KFP
compiler compiles one, the CLI renders one), and their JSON form.

Invariants: every object is a frozen, slotted, keyword-only dataclass; collections are tuples
or read-only mappings; a `Pipeline` is only obtained from `Pipeline.build`, which checks the
structure (unique names, known steps, no cycle, inputs wired to an upstream output) and
reports every problem at once. Steps are kept in a deterministic topological order.

Must not depend on: notebooks, storage, the runner or any I/O.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeAlias

from cellpipe.errors import PipelineValidationError, Problem

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None

_EMPTY: Mapping[str, str] = MappingProxyType({})

RANDOM_STATE = "__random_state__"
"""The pseudo-variable that carries the global random generators' state from step to step.

When a notebook seeds a global generator (``np.random.seed``, ``random.seed``,
``torch.manual_seed``), the analysis makes every step that may draw from it read and write this
name, in notebook order, so the random stream continues as in Jupyter. The runner restores the
generators from it before the step's code and stores their state after it; it takes part in
cache keys, lineage and ``why`` like any other variable. It is never bound in the namespace.
"""


def _frozen_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(sorted((value or {}).items())))


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeChunk:
    """The code of one notebook cell as it belongs to a step (or to the imports/functions).

    Attributes:
        cell: 1-based position of the cell in the notebook (Jupyter's "cell N").
        source: the cell's text as the user wrote it, magics included.
        python: the same code as plain Python (IPython's input transformer applied); it has
            the same number of lines as ``source`` so line numbers map one to one.
    """

    cell: int
    source: str
    python: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Package:
    """A top-level module a step imports, and the installed distribution that provides it.

    Attributes:
        module: the top-level import name (``sklearn``).
        distribution: the distribution name (``scikit-learn``), None when not installed here.
        version: the installed version, None when not installed here.
        source: ``import`` for an import statement, ``pip`` for a ``%pip install`` line.
    """

    module: str
    distribution: str | None
    version: str | None
    source: str = "import"

    def requirement(self) -> str | None:
        """Return the pinned requirement (``scikit-learn==1.5.0``), or None if unknown."""
        if self.distribution is None:
            return None
        if self.version is None:
            return self.distribution
        return f"{self.distribution}=={self.version}"

    def to_json(self) -> dict[str, JsonValue]:
        """Return a JSON-ready dict."""
        return {
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSettings:
    """Per-step settings from Kale's tags, kept for cluster targets.

    Attributes:
        image: container image (``image:`` tag).
        limits: resource limits (``limit:KEY:VALUE``), e.g. ``{"memory": "4Gi"}``.
        cache: False when caching is switched off (``cache:false``); None when not set.
        annotations: pod annotations (``annotation:KEY:VALUE``).
        labels: pod labels (``label:KEY:VALUE``).
        secrets: Kubernetes secrets to expose (``secret:...`` tag bodies, as written).
        report: False when the HTML report of captured outputs is switched off.
        keep_processes: True when the processes the step starts may outlive it
            (``processes:keep``); by default the runner stops the step's process group
            when the step ends.
        all_outputs: False when only the values later steps read are stored
            (``outputs:needed``); by default every value the step binds is stored.
    """

    image: str | None = None
    limits: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    cache: bool | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    secrets: tuple[str, ...] = ()
    report: bool = True
    keep_processes: bool = False
    all_outputs: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", _frozen_map(self.limits))
        object.__setattr__(self, "annotations", _frozen_map(self.annotations))
        object.__setattr__(self, "labels", _frozen_map(self.labels))

    def to_json(self) -> dict[str, JsonValue]:
        """Return a JSON-ready dict."""
        return {
            "image": self.image,
            "limits": dict(self.limits),
            "cache": self.cache,
            "annotations": dict(self.annotations),
            "labels": dict(self.labels),
            "secrets": list(self.secrets),
            "report": self.report,
            "keep_processes": self.keep_processes,
            **({} if self.all_outputs else {"outputs": "needed"}),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class InputRef:
    """A variable a step reads from an upstream step.

    Attributes:
        name: the variable name.
        producer: the step whose output provides it.
    """

    name: str
    producer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRef:
    """A workspace file a step reads after an earlier step writes it (a file edge).

    Attributes:
        path: the file as written in the code, relative to the notebook's folder.
        producer: the step that writes it; the reader runs after it.
        cell: the 1-based cell of the read.
        line: the 1-based line of the read in that cell.
    """

    path: str
    producer: str
    cell: int = 0
    line: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One step of the pipeline: the code of one or more cells, run in its own process.

    Attributes:
        name: unique step name (``[a-z_][a-z0-9_]*``).
        cells: the 1-based notebook cell numbers of its code.
        code: its code chunks, in notebook order.
        upstream: names of the steps it runs after (explicit ``prev:`` and data edges), sorted.
        inputs: the variables it reads from upstream steps, sorted by name.
        outputs: the variables it hands on (read downstream or logged as metrics), sorted.
        binds: the other variables it binds at top level, sorted, except names starting with
            ``_`` (private or throwaway by Python convention): stored after the step reports
            its result, to load later (not read downstream; not in the cache key).
        parameters: the pipeline parameters it reads (directly or through functions), sorted.
        packages: the distributions it needs (imports cell, functions cell and its own).
        settings: per-step settings from the tags.
        files: the workspace files it reads that an upstream step writes (file edges), sorted.
    """

    name: str
    cells: tuple[int, ...]
    code: tuple[CodeChunk, ...]
    upstream: tuple[str, ...] = ()
    inputs: tuple[InputRef, ...] = ()
    outputs: tuple[str, ...] = ()
    binds: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()
    packages: tuple[Package, ...] = ()
    settings: StepSettings = field(default_factory=StepSettings)
    files: tuple[FileRef, ...] = ()

    @property
    def input_names(self) -> tuple[str, ...]:
        """The names of the variables it reads from upstream steps."""
        return tuple(ref.name for ref in self.inputs)

    def to_json(self) -> dict[str, JsonValue]:
        """Return a JSON-ready dict (the ``steps[]`` entries of ``cellpipe check --json``)."""
        return {
            "name": self.name,
            "cells": list(self.cells),
            "upstream": list(self.upstream),
            "inputs": [{"name": r.name, "from": r.producer} for r in self.inputs],
            "outputs": list(self.outputs),
            "parameters": list(self.parameters),
            "packages": [p.to_json() for p in self.packages],
            "settings": self.settings.to_json(),
            **(
                {"files": [{"path": f.path, "from": f.producer} for f in self.files]}
                if self.files
                else {}
            ),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """A dependency between two steps and the variables that flow along it.

    Attributes:
        source: the upstream step.
        target: the downstream step.
        variables: the variables passed, sorted; empty for a pure ordering edge (``prev:``).
        files: the workspace files the source writes and the target reads, sorted.
    """

    source: str
    target: str
    variables: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def to_json(self) -> dict[str, JsonValue]:
        """Return a JSON-ready dict with ``from``, ``to``, ``variables`` (and ``files``)."""
        doc: dict[str, JsonValue] = {
            "from": self.source,
            "to": self.target,
            "variables": list(self.variables),
        }
        if self.files:
            doc["files"] = list(self.files)
        return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class Parameter:
    """A pipeline parameter (hyperparameter) from the ``pipeline-parameters`` cell.

    Attributes:
        name: the variable name.
        type: one of ``int``, ``float``, ``bool``, ``str``, ``NoneType``, ``list``, ``dict``.
        default: the literal value in the notebook.
        cell: 1-based cell number.
        line: 1-based line in that cell.
    """

    name: str
    type: str
    default: JsonValue
    cell: int
    line: int

    def to_json(self) -> dict[str, JsonValue]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "cell": self.cell,
            "line": self.line,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """A pipeline metric named in the ``pipeline-metrics`` cell.

    Attributes:
        name: the variable name.
        producer: the step whose output holds its final value; empty for a pipeline
            parameter named as a metric (its value for the run is the metric).
        cell: 1-based cell number.
        line: 1-based line in that cell.
    """

    name: str
    producer: str
    cell: int
    line: int

    def to_json(self) -> dict[str, JsonValue]:
        """Return a JSON-ready dict."""
        return {"name": self.name, "step": self.producer, "cell": self.cell, "line": self.line}


@dataclass(frozen=True, slots=True, kw_only=True)
class NotebookSettings:
    """Notebook-level settings (Kale's ``kubeflow_notebook`` metadata).

    Attributes:
        pipeline_name: the pipeline's name if the notebook sets one.
        description: a pipeline description.
        experiment: the KFP experiment name.
        image: the default container image for every step.
        volumes: PVC mounts as written in the metadata (``name``, ``mount_point``, ...).
        raw: the whole metadata dict as found, for targets that need more.
    """

    pipeline_name: str | None = None
    description: str | None = None
    experiment: str | None = None
    image: str | None = None
    volumes: tuple[Mapping[str, JsonValue], ...] = ()
    raw: Mapping[str, JsonValue] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, JsonValue]:
        """Return a JSON-ready dict (without ``raw``)."""
        return {
            "pipeline_name": self.pipeline_name,
            "description": self.description,
            "experiment": self.experiment,
            "image": self.image,
            "volumes": [dict(v) for v in self.volumes],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Pipeline:
    """A validated pipeline. Build it with `Pipeline.build`, never directly.

    Attributes:
        name: the pipeline's name (notebook metadata, else the notebook's file stem).
        path: the notebook it came from, as given.
        steps: the steps in a deterministic topological order (notebook order among ties).
        edges: every dependency, sorted by (source, target).
        parameters: pipeline parameters in notebook order.
        metrics: pipeline metrics in notebook order.
        imports: the imports cells' code, run at the start of every step.
        functions: the functions cells' code, run after the imports in every step.
        settings: notebook-level settings.
        warnings: non-fatal problems found while reading the notebook.
        markdown: the notebook's markdown cells (``python`` empty), kept for the executed
            notebook of a run, where they stand between the steps as in the notebook.
    """

    name: str
    path: str
    steps: tuple[Step, ...]
    edges: tuple[Edge, ...]
    parameters: tuple[Parameter, ...] = ()
    metrics: tuple[Metric, ...] = ()
    imports: tuple[CodeChunk, ...] = ()
    functions: tuple[CodeChunk, ...] = ()
    settings: NotebookSettings = field(default_factory=NotebookSettings)
    warnings: tuple[Problem, ...] = ()
    markdown: tuple[CodeChunk, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        name: str,
        path: str,
        steps: Iterable[Step],
        parameters: Iterable[Parameter] = (),
        metrics: Iterable[Metric] = (),
        imports: Iterable[CodeChunk] = (),
        functions: Iterable[CodeChunk] = (),
        settings: NotebookSettings | None = None,
        warnings: Iterable[Problem] = (),
        markdown: Iterable[CodeChunk] = (),
    ) -> Pipeline:
        """Check the structure and return the pipeline.

        Edges are derived from each step's ``upstream`` and ``inputs``.

        Args:
            name: the pipeline's name.
            path: the notebook path, used in messages.
            steps: the steps, in notebook order.
            parameters: the pipeline parameters.
            metrics: the pipeline metrics.
            imports: the imports cells' code.
            functions: the functions cells' code.
            settings: notebook-level settings.
            warnings: non-fatal problems to carry along.
            markdown: the notebook's markdown cells.

        Returns:
            The validated pipeline, steps in topological order.

        Raises:
            PipelineValidationError: with every structural problem found.
        """
        step_list = list(steps)
        params = tuple(parameters)
        metric_list = tuple(metrics)
        problems = _structure_problems(step_list, params, metric_list)
        if problems:
            raise PipelineValidationError(problems, path=path)
        ordered = _topological(step_list)
        return cls(
            name=name,
            path=path,
            steps=ordered,
            edges=_edges(ordered),
            parameters=params,
            metrics=metric_list,
            imports=tuple(imports),
            functions=tuple(functions),
            settings=settings or NotebookSettings(),
            warnings=tuple(warnings),
            markdown=tuple(markdown),
        )

    def step(self, name: str) -> Step:
        """Return the step called ``name``.

        Raises:
            KeyError: if there is no such step.
        """
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def step_names(self) -> tuple[str, ...]:
        """The step names in topological order."""
        return tuple(s.name for s in self.steps)

    def downstream(self, name: str) -> tuple[str, ...]:
        """Return every step that depends on ``name``, directly or not, in topological order."""
        found = {name}
        for step in self.steps:
            if any(up in found for up in step.upstream):
                found.add(step.name)
        found.discard(name)
        return tuple(s.name for s in self.steps if s.name in found)

    def upstream_closure(self, name: str) -> tuple[str, ...]:
        """Return every step ``name`` depends on, directly or not, in topological order."""
        by_name = {s.name: s for s in self.steps}
        found: set[str] = set()
        pending = list(by_name[name].upstream)
        while pending:
            current = pending.pop()
            if current not in found:
                found.add(current)
                pending.extend(by_name[current].upstream)
        return tuple(s.name for s in self.steps if s.name in found)

    def to_json(self) -> dict[str, JsonValue]:
        """Return the JSON form used by ``cellpipe check --json``."""
        return {
            "name": self.name,
            "path": self.path,
            "steps": [s.to_json() for s in self.steps],
            "edges": [e.to_json() for e in self.edges],
            "parameters": [p.to_json() for p in self.parameters],
            "metrics": [m.to_json() for m in self.metrics],
            "imports_cells": [c.cell for c in self.imports],
            "functions_cells": [c.cell for c in self.functions],
            "settings": self.settings.to_json(),
            "warnings": [w.to_json() for w in self.warnings],  # type: ignore[misc]
        }


def _structure_problems(
    steps: list[Step], params: tuple[Parameter, ...], metrics: tuple[Metric, ...]
) -> list[Problem]:
    problems: list[Problem] = []
    names: dict[str, Step] = {}
    for step in steps:
        if step.name in names:
            problems.append(
                Problem(
                    code="duplicate-step",
                    message=f"step name '{step.name}' is used twice "
                    f"(cells {names[step.name].cells[0]} and {step.cells[0]})",
                    cell=step.cells[0] if step.cells else None,
                    step=step.name,
                    hint="give each step:NAME tag a unique name",
                )
            )
        names[step.name] = step
    for step in steps:
        cell = step.cells[0] if step.cells else None
        for up in step.upstream:
            if up not in names:
                problems.append(
                    Problem(
                        code="unknown-step",
                        message=f"step '{step.name}' runs after '{up}', but there is no such step",
                        cell=cell,
                        step=step.name,
                    )
                )
        for ref in step.inputs:
            producer = names.get(ref.producer)
            if producer is None:
                problems.append(
                    Problem(
                        code="unknown-step",
                        message=f"step '{step.name}' reads '{ref.name}' from unknown step "
                        f"'{ref.producer}'",
                        cell=cell,
                        step=step.name,
                    )
                )
            elif ref.name not in producer.outputs:
                problems.append(
                    Problem(
                        code="unwired-input",
                        message=f"step '{step.name}' reads '{ref.name}' from '{ref.producer}', "
                        f"which does not output it",
                        cell=cell,
                        step=step.name,
                    )
                )
            elif ref.producer not in step.upstream:
                problems.append(
                    Problem(
                        code="unwired-input",
                        message=f"step '{step.name}' reads '{ref.name}' from '{ref.producer}' "
                        "but does not run after it",
                        cell=cell,
                        step=step.name,
                    )
                )
        for file in step.files:
            if file.producer not in step.upstream:
                problems.append(
                    Problem(
                        code="unwired-input",
                        message=f"step '{step.name}' reads file '{file.path}' written by "
                        f"'{file.producer}' but does not run after it",
                        cell=cell,
                        step=step.name,
                    )
                )
    seen_params: set[str] = set()
    for param in params:
        if param.name in seen_params:
            problems.append(
                Problem(
                    code="duplicate-parameter",
                    message=f"parameter '{param.name}' is defined twice",
                    cell=param.cell,
                    line=param.line,
                )
            )
        seen_params.add(param.name)
    for step in steps:
        for pname in step.parameters:
            if pname not in seen_params:
                problems.append(
                    Problem(
                        code="unknown-parameter",
                        message=f"step '{step.name}' reads unknown parameter '{pname}'",
                        step=step.name,
                    )
                )
    for metric in metrics:
        if metric.producer == "" and metric.name in seen_params:
            continue  # a pipeline parameter named as a metric: its value for the run
        producer = names.get(metric.producer)
        if producer is None or metric.name not in producer.outputs:
            problems.append(
                Problem(
                    code="unwired-metric",
                    message=f"metric '{metric.name}' is not an output of step '{metric.producer}'",
                    cell=metric.cell,
                    line=metric.line,
                )
            )
    if not problems:
        problems.extend(_cycle_problems(steps))
    return problems


def _cycle_problems(steps: list[Step]) -> list[Problem]:
    sorter = graphlib.TopologicalSorter({s.name: set(s.upstream) for s in steps})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        return [
            Problem(
                code="cycle",
                message="the steps form a cycle: " + " -> ".join(cycle),
                hint="remove one of the prev: tags on this cycle",
            )
        ]
    return []


def _topological(steps: list[Step]) -> tuple[Step, ...]:
    # Kahn's algorithm, always taking the ready step that comes first in the notebook, so the
    # order is deterministic and matches the notebook wherever the graph allows.
    position = {s.name: i for i, s in enumerate(steps)}
    remaining = {s.name: set(s.upstream) for s in steps}
    ordered: list[Step] = []
    by_name = {s.name: s for s in steps}
    while remaining:
        ready = sorted((n for n, ups in remaining.items() if not ups), key=position.__getitem__)
        first = ready[0]
        ordered.append(by_name[first])
        del remaining[first]
        for ups in remaining.values():
            ups.discard(first)
    return tuple(ordered)


def _edges(steps: tuple[Step, ...]) -> tuple[Edge, ...]:
    edges = []
    for step in steps:
        for up in step.upstream:
            variables = sorted({r.name for r in step.inputs if r.producer == up})
            files = sorted({f.path for f in step.files if f.producer == up})
            edges.append(
                Edge(source=up, target=step.name, variables=tuple(variables), files=tuple(files))
            )
    return tuple(sorted(edges, key=lambda e: (e.source, e.target)))
