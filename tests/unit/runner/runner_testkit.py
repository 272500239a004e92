"""Factories for runner tests: pipelines built by hand, a minimal orchestrator, a runner."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from IPython.core.inputtransformer2 import TransformerManager

from cellpipe.pipeline.model import (
    CodeChunk,
    FileRef,
    InputRef,
    JsonValue,
    Metric,
    Parameter,
    Pipeline,
    Step,
)
from cellpipe.runner import (
    Executor,
    RunOutcome,
    StepJob,
    StepResult,
    run_steps,
)
from cellpipe.runner._guard import guarded_inputs
from cellpipe.runner.events import CollectingSink
from cellpipe.runner.jobs import pipeline_needs_shell

_TRANSFORMER = TransformerManager()


def chunk(cell: int, source: str) -> CodeChunk:
    """A cell as the notebook reader would give it (magics transformed to Python)."""
    return CodeChunk(cell=cell, source=source, python=_TRANSFORMER.transform_cell(source))


def step(
    name: str,
    cell: int,
    source: str,
    *,
    inputs: Mapping[str, str] | None = None,
    outputs: Sequence[str] = (),
    after: Sequence[str] = (),
    parameters: Sequence[str] = (),
    files: Sequence[FileRef] = (),
) -> Step:
    """A one-cell step; ``inputs`` maps variable -> producing step."""
    refs = tuple(InputRef(name=v, producer=p) for v, p in sorted((inputs or {}).items()))
    upstream = tuple(sorted({*after, *(r.producer for r in refs)}))
    return Step(
        name=name,
        cells=(cell,),
        code=(chunk(cell, source),),
        upstream=upstream,
        inputs=refs,
        outputs=tuple(sorted(outputs)),
        parameters=tuple(sorted(parameters)),
        files=tuple(files),
    )


def pipeline(
    *steps: Step,
    imports: str = "",
    functions: str = "",
    params: Mapping[str, JsonValue] | None = None,
    metrics: Sequence[Metric] = (),
) -> Pipeline:
    return Pipeline.build(
        name="train",
        path="train.ipynb",
        steps=steps,
        imports=[chunk(1, imports)] if imports else [],
        functions=[chunk(2, functions)] if functions else [],
        parameters=[
            Parameter(name=k, type=type(v).__name__, default=v, cell=3, line=i + 1)
            for i, (k, v) in enumerate((params or {}).items())
        ],
        metrics=metrics,
    )


@dataclass
class Orchestrator:
    """The smallest `prepare`: every step runs; inputs come from upstream results."""

    pipeline: Pipeline
    workdir: Path
    params: Mapping[str, JsonValue] = field(default_factory=dict)
    cached: Mapping[str, StepResult] = field(default_factory=dict)
    jobs_made: list[StepJob] = field(default_factory=list)

    def __call__(self, step: Step, upstream: Mapping[str, StepResult]) -> StepJob | StepResult:
        if step.name in self.cached:
            return self.cached[step.name]
        params = {p.name: p.default for p in self.pipeline.parameters}
        params.update(self.params)
        job = StepJob(
            step=step.name,
            cells=step.code,
            preamble=self.pipeline.imports + self.pipeline.functions,
            notebook=str(self.workdir / "train.ipynb"),
            workdir=str(self.workdir),
            params=params,
            inputs={r.name: upstream[r.producer].outputs[r.name] for r in step.inputs},
            outputs=step.outputs,
            artifact_root=str(self.workdir / ".cellpipe" / "artifacts"),
            scratch_dir=str(self.workdir / ".cellpipe" / "runs" / "r1" / step.name),
            run_id="r1",
            shell=pipeline_needs_shell(self.pipeline),  # as the orchestrator decides
            guarded=guarded_inputs(self.pipeline).get(step.name, ()),  # as the orchestrator
            keep_processes=step.settings.keep_processes,
        )
        self.jobs_made.append(job)
        return job


@dataclass
class Runner:
    """Runs hand-built pipelines with one executor kind, collecting events."""

    workdir: Path
    make_executor: Callable[[], Executor]
    kind: str

    def run(
        self,
        pipe: Pipeline,
        *,
        jobs: int = 2,
        params: Mapping[str, JsonValue] | None = None,
        cached: Mapping[str, StepResult] | None = None,
        executor: Executor | None = None,
        **kwargs: Any,
    ) -> tuple[RunOutcome, CollectingSink]:
        sink = CollectingSink()
        prepare = Orchestrator(pipe, self.workdir, params or {}, cached or {})
        if executor is not None:
            return run_steps(
                pipe, prepare=prepare, executor=executor, sink=sink, jobs=jobs, **kwargs
            ), sink
        owned = self.make_executor()
        try:
            outcome = run_steps(
                pipe, prepare=prepare, executor=owned, sink=sink, jobs=jobs, **kwargs
            )
        finally:
            owned.close()
        return outcome, sink
