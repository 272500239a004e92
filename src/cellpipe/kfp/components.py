"""The ``components`` section of the IR: each step's inputs and outputs, named and typed.

Owns: `plan_io` (the input/output keys of every step's component, decided once so producers
and consumers agree), `artifact_type` (which ``system.*`` type a variable gets) and
`component_spec` (one ``components.comp-<step>`` entry).

Artifact types cannot be known statically (a variable's type is only known when the step
runs), so a variable's type is a heuristic on its producing step, in this order:

1. ``system.Model`` when the producer calls ``VAR.fit(...)``, ``VAR.train(...)`` or
   ``VAR.compile(...)``, assigns ``VAR = X(...).fit(...)``, or the name has a ``model`` part
   (``model``, ``best_model``, ``modelA``);
2. ``system.Dataset`` when the name reads as data (``X``, ``y``, ``X_train``, ``df``,
   ``data``, ``dataset``, ``frame``, ``features``, ``labels``, ``train``, ``test``, ``samples``,
   ``table``, ``matrix``, ``array`` parts) or the producer assigns it from a call that makes
   frames or arrays (``read_csv``, ``DataFrame``, ``np.array``, ``train_test_split``, ...);
3. ``system.Artifact`` otherwise.

The type only changes how the KFP UI shows an artifact; the runtime stores every value the
same way whatever its type.

Invariants: keys are Python identifiers (they are the component function's argument names)
and unique per component; a variable keeps its name as key unless it clashes, in which case
``_out`` (then ``_2``, ``_3``...) is appended. Pure; no kfp import.

Must not depend on: the runner, storage, kfp.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cellpipe.kfp.parameters import parameter_type
from cellpipe.pipeline.model import Pipeline, Step

SCHEMA_VERSION = "0.0.1"
DATASET = "system.Dataset"
MODEL = "system.Model"
ARTIFACT = "system.Artifact"
METRICS = "system.Metrics"
HTML = "system.HTML"

_MODEL_METHODS = frozenset({"fit", "train", "compile"})
_DATA_WORDS = frozenset(
    {
        "x",
        "y",
        "df",
        "data",
        "dataset",
        "frame",
        "features",
        "feature",
        "labels",
        "label",
        "train",
        "test",
        "val",
        "valid",
        "samples",
        "table",
        "matrix",
        "array",
    }
)
_DATA_CALLS = re.compile(
    r"\b(read_csv|read_parquet|read_json|read_excel|read_sql|read_table|DataFrame|Series|"
    r"array|asarray|zeros|ones|arange|linspace|concat|merge|train_test_split|to_numpy)\b"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepIO:
    """The keys of one step's component.

    Attributes:
        step: the step name.
        parameters: key -> pipeline parameter name.
        inputs: key -> (variable, producer step).
        outputs: key -> variable.
        metrics_key: the ``system.Metrics`` output's key.
        report_key: the ``system.HTML`` output's key, None when the report is off.
    """

    step: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    metrics_key: str = "metrics"
    report_key: str | None = "report"

    def output_key(self, variable: str) -> str:
        """Return the key of the output that carries ``variable``."""
        for key, name in self.outputs.items():
            if name == variable:
                return key
        raise KeyError(variable)


def _allocate(wanted: str, taken: set[str], suffix: str) -> str:
    key = wanted
    if key in taken:
        key = f"{wanted}{suffix}"
    number = 2
    while key in taken:
        key = f"{wanted}{suffix}_{number}"
        number += 1
    taken.add(key)
    return key


def plan_io(pipeline: Pipeline) -> dict[str, StepIO]:
    """Return every step's component keys, by step name.

    Args:
        pipeline: the pipeline being compiled.

    Returns:
        Step name -> its `StepIO`.
    """
    planned: dict[str, StepIO] = {}
    for step in pipeline.steps:
        taken: set[str] = set()
        parameters = {_allocate(p, taken, "_param"): p for p in step.parameters}
        inputs = {_allocate(r.name, taken, "_in"): (r.name, r.producer) for r in step.inputs}
        outputs = {_allocate(v, taken, "_out"): v for v in step.outputs}
        metrics_key = _allocate("metrics", taken, "_step")
        report_key = _allocate("report", taken, "_step") if step.settings.report else None
        planned[step.name] = StepIO(
            step=step.name,
            parameters=parameters,
            inputs=inputs,
            outputs=outputs,
            metrics_key=metrics_key,
            report_key=report_key,
        )
    return planned


def _words(name: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return {w.lower() for w in spaced.split("_") if w}


def _model_names(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _MODEL_METHODS
        ):
            target = node.func.value
            if isinstance(target, ast.Name):
                found.add(target.id)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Attribute) and func.attr in _MODEL_METHODS:
                found.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return found


def _data_names(tree: ast.AST, code: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            source = ast.get_source_segment(code, node.value) or ""
            if _DATA_CALLS.search(source):
                for target in node.targets:
                    elements = target.elts if isinstance(target, ast.Tuple) else [target]
                    found.update(e.id for e in elements if isinstance(e, ast.Name))
    return found


def artifact_types(step: Step) -> dict[str, str]:
    """Return the ``system.*`` type of each output variable of ``step`` (see module doc).

    Args:
        step: the producing step.

    Returns:
        Variable -> schema title.
    """
    models: set[str] = set()
    data: set[str] = set()
    for chunk in step.code:
        try:
            tree = ast.parse(chunk.python)
        except SyntaxError:
            continue
        models |= _model_names(tree)
        data |= _data_names(tree, chunk.python)
    types: dict[str, str] = {}
    for variable in step.outputs:
        words = _words(variable)
        if variable in models or "model" in words:
            types[variable] = MODEL
        elif variable in data or words & _DATA_WORDS:
            types[variable] = DATASET
        else:
            types[variable] = ARTIFACT
    return types


def artifact_type(schema_title: str) -> dict[str, str]:
    """Return the IR ``artifactType`` of a schema title."""
    return {"schemaTitle": schema_title, "schemaVersion": SCHEMA_VERSION}


def component_spec(
    step: Step,
    io: StepIO,
    *,
    pipeline: Pipeline,
    types: Mapping[str, Mapping[str, str]],
    executor_label: str,
) -> dict[str, Any]:
    """Return the ``components`` entry of one step.

    Args:
        step: the step.
        io: its keys.
        pipeline: the pipeline (parameter types).
        types: step name -> variable -> schema title, for every step.
        executor_label: the ``deploymentSpec.executors`` key of its executor.

    Returns:
        The component spec as a plain dict.
    """
    declared = {p.name: p for p in pipeline.parameters}
    inputs: dict[str, Any] = {}
    if io.parameters:
        inputs["parameters"] = {
            key: {"parameterType": parameter_type(declared[name], step=step.name)}
            for key, name in io.parameters.items()
        }
    if io.inputs:
        inputs["artifacts"] = {
            key: {"artifactType": artifact_type(types[producer][variable])}
            for key, (variable, producer) in io.inputs.items()
        }
    outputs: dict[str, Any] = {
        key: {"artifactType": artifact_type(types[step.name][variable])}
        for key, variable in io.outputs.items()
    }
    outputs[io.metrics_key] = {"artifactType": artifact_type(METRICS)}
    if io.report_key is not None:
        outputs[io.report_key] = {"artifactType": artifact_type(HTML)}
    spec: dict[str, Any] = {
        "executorLabel": executor_label,
        "outputDefinitions": {"artifacts": outputs},
    }
    if inputs:
        spec["inputDefinitions"] = inputs
    return spec


def all_artifact_types(steps: Iterable[Step]) -> dict[str, dict[str, str]]:
    """Return step name -> variable -> schema title for every step."""
    return {step.name: artifact_types(step) for step in steps}
