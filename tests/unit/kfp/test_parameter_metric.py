"""Issue 9 (14): a pipeline parameter named as a metric compiles (its value is the parameter's)."""

from __future__ import annotations

import dataclasses

import pytest
from test_compiler import BASIC, OPTIONS

from cellpipe.kfp import compile_documents
from cellpipe.kfp.validate import validate_documents
from cellpipe.kfp.yaml import dump_yaml, load_yaml
from cellpipe.pipeline.model import Metric

pytestmark = pytest.mark.kfp


def test_a_parameter_metric_compiles_and_adds_nothing_to_the_ir(make_pipeline):
    pipeline = make_pipeline(BASIC)
    plain = dump_yaml(compile_documents(pipeline, **OPTIONS))
    # The analysis gives a parameter named as a metric the producer "" (no step): no step
    # logs it; on KFP its value is the run's parameter, shown with the run's inputs.
    metrics = (*pipeline.metrics, Metric(name="RATE", producer="", cell=5, line=2))
    text = dump_yaml(compile_documents(dataclasses.replace(pipeline, metrics=metrics), **OPTIONS))
    assert validate_documents(load_yaml(text)) == []
    assert text == plain


class _Metrics:
    def __init__(self, path) -> None:
        self.path = str(path)
        self.metadata: dict[str, object] = {}
        self.logged: dict[str, float] = {}

    def log_metric(self, name: str, value: float) -> None:
        self.logged[name] = value


def test_a_non_number_metric_in_a_pod_is_a_warning_not_a_silent_drop(tmp_path, capsys):
    from cellpipe.kfp.runtime import run_step

    metrics = _Metrics(tmp_path / "metrics.json")
    spec = {
        "step": "evaluate",
        "notebook": "nb.ipynb",
        "image": "python:3.11",
        "preamble": [],
        "cells": [[4, "acc = 0.5\ncm = [[5, 1], [0, 4]]"]],
        "parameters": {},
        "inputs": {},
        "outputs": {},
        "metrics": ["acc", "cm"],
        "metrics_key": "metrics",
        "report_key": None,
    }
    run_step(spec, {"metrics": metrics})
    assert metrics.logged == {"acc": 0.5}
    assert "cellpipe warning: metric 'cm' of step 'evaluate' is a list, not a number" in (
        capsys.readouterr().err
    )
