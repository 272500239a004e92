"""metric_json: what a metric's Python value is recorded as (issue 9, class 6)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cellpipe.storage.metric_values import MAX_METRIC_JSON, MetricValueError, metric_json


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(3, 3, id="int"),
        pytest.param(0.25, 0.25, id="float"),
        pytest.param(True, True, id="bool"),
        pytest.param("ok", "ok", id="str"),
        pytest.param(None, None, id="none"),
        pytest.param(float("nan"), None, id="nan"),
        pytest.param(float("-inf"), None, id="-inf"),
        pytest.param(np.float32(0.5), 0.5, id="numpy-float32"),
        pytest.param(np.int64(7), 7, id="numpy-int64"),
        pytest.param(np.bool_(True), True, id="numpy-bool"),
        pytest.param(np.float64("nan"), None, id="numpy-nan"),
        pytest.param(np.array([[5, 1], [0, 4]]), [[5, 1], [0, 4]], id="confusion-matrix"),
        pytest.param(np.array([0.5, np.nan, np.inf]), [0.5, None, None], id="array-nan"),
        pytest.param(np.array(["a", "b"], dtype=object), ["a", "b"], id="object-array"),
        pytest.param((1, [2, (3,)]), [1, [2, [3]]], id="nested-tuples"),
        pytest.param({1: 0.5, None: 1, 2.5: 2}, {"1": 0.5, "null": 1, "2.5": 2}, id="keys"),
        pytest.param(
            {"0": {"precision": np.float64(0.9), "support": np.int64(3)}, "accuracy": 0.75},
            {"0": {"precision": 0.9, "support": 3}, "accuracy": 0.75},
            id="classification-report",
        ),
        pytest.param(pd.Series([0.1, 0.2], index=["a", "b"]), {"a": 0.1, "b": 0.2}, id="series"),
        pytest.param(
            pd.DataFrame({"x": [1, 2], "y": [0.5, float("nan")]}),
            [{"x": 1, "y": 0.5}, {"x": 2, "y": None}],
            id="frame-records",
        ),
        pytest.param(
            pd.DataFrame({"f1": [0.8, 0.9]}, index=["cat", "dog"]),
            {"cat": {"f1": 0.8}, "dog": {"f1": 0.9}},
            id="frame-by-index",
        ),
    ],
)
def test_values_become_json(value: object, expected: object) -> None:
    got = metric_json("m", value)
    assert got == expected
    json.dumps(got, allow_nan=False)  # strict JSON: no NaN left anywhere


def test_nan_inside_containers_is_null_not_nan() -> None:
    got = metric_json("m", {"a": [float("nan"), 1.0]})
    assert got == {"a": [None, 1.0]}
    assert not any(isinstance(v, float) and math.isnan(v) for v in got["a"] if v is not None)


def test_result_shares_no_container_with_the_input() -> None:
    value = {"a": [1, 2]}
    got = metric_json("m", value)
    got["a"].append(3)
    assert value == {"a": [1, 2]}


class _Model:
    pass


@pytest.mark.parametrize(
    ("value", "match"),
    [
        pytest.param(_Model(), r"m is of type .*_Model, which has no JSON form", id="object"),
        pytest.param({1, 2}, r"m is of type set", id="set"),
        pytest.param(1 + 2j, r"m is of type complex", id="complex"),
        pytest.param(np.array([1 + 1j]), r"m\[0\] is of type complex", id="complex-array"),
        pytest.param({"a": [_Model()]}, r"m\['a'\]\[0\] is of type", id="nested-object"),
        pytest.param({(1, 2): 3}, r"m has a key of type tuple", id="tuple-key"),
        pytest.param({1: 1, "1": 2}, r"two keys written '1'", id="clashing-keys"),
        pytest.param(pd.DataFrame({"x": [1, 2]}, index=["a", "a"]), "duplicates", id="dup-index"),
        pytest.param(
            np.zeros(MAX_METRIC_JSON // 3 + 1), r"characters as JSON, more than", id="too-large"
        ),
    ],
)
def test_values_without_a_json_form_are_refused_with_the_reason(value: object, match: str) -> None:
    with pytest.raises(MetricValueError, match=match):
        metric_json("m", value)


def test_self_containing_list_is_refused() -> None:
    value: list[object] = []
    value.append(value)
    with pytest.raises(MetricValueError, match="deep"):
        metric_json("m", value)
