"""Signature inference: numpy, pandas, lists, callables; unknown means None, never an error."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from cellpipe.registry.model import Signature, TensorSpec
from cellpipe.registry.signature import infer_signature, oip_datatype, tensor_specs


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.bool_, "BOOL"),
        (np.uint8, "UINT8"),
        (np.uint64, "UINT64"),
        (np.int8, "INT8"),
        (np.int32, "INT32"),
        (np.int64, "INT64"),
        (np.float16, "FP16"),
        (np.float32, "FP32"),
        (np.float64, "FP64"),
        (np.str_, "BYTES"),
        (np.bytes_, "BYTES"),
        (np.object_, "BYTES"),
        (np.complex128, None),
        ("datetime64[ns]", None),
    ],
    ids=lambda v: str(v),
)
def test_numpy_dtypes_map_to_oip_datatypes(dtype: Any, expected: str | None) -> None:
    assert oip_datatype(np.dtype(dtype)) == expected


def test_pandas_dtypes() -> None:
    assert oip_datatype(pd.Series([1, None], dtype="Int64").dtype) == "INT64"
    assert oip_datatype(pd.Series(["a"], dtype="category").dtype) == "BYTES"
    assert oip_datatype(pd.Series(["a"], dtype="string").dtype) == "BYTES"


def test_an_array_is_one_tensor_with_a_batch_dimension() -> None:
    specs = tensor_specs(np.zeros((10, 3, 2), dtype=np.float32))
    assert specs == (TensorSpec(name="input-0", datatype="FP32", shape=(-1, 3, 2)),)
    assert tensor_specs(np.array(1.0)) == (TensorSpec(name="input-0", datatype="FP64", shape=()),)


def test_a_dataframe_is_one_tensor_per_column() -> None:
    frame = pd.DataFrame({"alcohol": [13.2, 12.1], "n": [1, 2], "kind": ["red", "white"]})
    assert tensor_specs(frame) == (
        TensorSpec(name="alcohol", datatype="FP64", shape=(-1,)),
        TensorSpec(name="n", datatype="INT64", shape=(-1,)),
        TensorSpec(name="kind", datatype="BYTES", shape=(-1,)),
    )


def test_series_lists_and_dicts() -> None:
    assert tensor_specs(pd.Series([1.0], name="x")) == (
        TensorSpec(name="x", datatype="FP64", shape=(-1,)),
    )
    assert tensor_specs([[1, 2], [3, 4]]) == (
        TensorSpec(name="input-0", datatype="INT64", shape=(-1, 2)),
    )
    assert tensor_specs({"a": [1.0, 2.0], "b": np.array([True, False])}) == (
        TensorSpec(name="a", datatype="FP64", shape=(-1,)),
        TensorSpec(name="b", datatype="BOOL", shape=(-1,)),
    )


@pytest.mark.parametrize(
    "value",
    [object(), None, [], {}, "text", np.array([1 + 2j]), [[1], [1, 2]]],
    ids=["object", "none", "empty-list", "empty-dict", "str", "complex", "ragged"],
)
def test_what_cannot_be_described_is_none(value: Any) -> None:
    assert tensor_specs(value) is None


class Doubler:
    def predict(self, x: Any) -> Any:
        return np.asarray(x, dtype=np.float64).sum(axis=1)

    def predict_proba(self, x: Any) -> Any:
        return np.ones((len(x), 3), dtype=np.float32)


def test_outputs_come_from_predict_and_predict_proba() -> None:
    sig = infer_signature(Doubler(), np.zeros((100, 4), dtype=np.int32))
    assert sig == Signature(
        inputs=(TensorSpec(name="input-0", datatype="INT32", shape=(-1, 4)),),
        outputs=(
            TensorSpec(name="output-0", datatype="FP64", shape=(-1,)),
            TensorSpec(name="predict_proba", datatype="FP32", shape=(-1, 3)),
        ),
    )


def test_outputs_of_a_callable_and_of_several_results() -> None:
    sig = infer_signature(lambda x: (np.asarray(x) * 2, np.asarray(x) > 0), [1.0, -1.0])
    assert sig is not None
    assert sig.outputs == (
        TensorSpec(name="output-0", datatype="FP64", shape=(-1,)),
        TensorSpec(name="output-1", datatype="BOOL", shape=(-1,)),
    )


def test_only_the_first_rows_reach_the_model() -> None:
    seen: list[int] = []

    def model(x: Any) -> Any:
        seen.append(len(x))
        return x

    infer_signature(model, np.zeros((10_000, 2)))
    assert seen == [2]


def test_a_model_that_fails_keeps_its_inputs_and_unknown_outputs_are_empty() -> None:
    def broken(x: Any) -> Any:
        raise RuntimeError("boom")

    sig = infer_signature(broken, np.zeros((2, 2)))
    assert sig is not None
    assert sig.outputs == ()
    assert infer_signature(object(), np.zeros((2, 2))) == Signature(
        inputs=(TensorSpec(name="input-0", datatype="FP64", shape=(-1, 2)),), outputs=()
    )


def test_unknown_example_or_model_is_none() -> None:
    assert infer_signature(Doubler(), object()) is None
    assert infer_signature(Doubler()) is None  # no example and no n_features_in_


def test_scikit_learn_model_without_an_example_uses_n_features_in() -> None:
    sklearn = pytest.importorskip("sklearn.tree")
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    fitted = sklearn.DecisionTreeClassifier().fit(frame, [0, 1, 0, 1])
    sig = infer_signature(fitted)
    assert sig is not None
    assert [t.name for t in sig.inputs] == ["a", "b"]
    assert [t.name for t in sig.outputs] == ["output-0", "predict_proba"]
    on_array = sklearn.DecisionTreeClassifier().fit(frame.to_numpy(), [0, 1, 0, 1])
    sig = infer_signature(on_array)
    assert sig is not None
    assert sig.inputs == (TensorSpec(name="input-0", datatype="FP64", shape=(-1, 2)),)
