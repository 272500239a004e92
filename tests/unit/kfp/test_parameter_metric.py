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
