"""Inferring a model's `Signature` (OIP tensors in and out) from an input example.

Owns: `infer_signature`, `tensor_specs`, `oip_datatype` and `example_inputs` (the stored
input example: the first `EXAMPLE_ROWS` rows as an Open Inference Protocol ``inputs`` list).

The rules:
    * a numpy array is one tensor ``input-0``: its dtype mapped to the OIP data type, its shape
      with the first (batch) dimension ``-1`` (a 0-d array keeps shape ``[]``);
    * a pandas DataFrame is **one 1-D tensor per column**, named after the column, shape
      ``[-1]``, in column order: the columns keep their own types (a string column is
      ``BYTES`` beside ``FP64`` ones) and their names, which models fitted on frames check
      (scikit-learn's ``feature_names_in_``). A server rebuilds the frame from the inputs in
      signature order (KServe's ``InferRequest.as_dataframe`` does the same);
    * a pandas Series is one tensor named after the series (``input-0`` when unnamed);
    * a list or tuple is converted with ``numpy.asarray`` and treated as an array; a dict of
      arrays or lists is one tensor per key;
    * outputs come from calling ``model.predict(example)`` when the model has ``predict``, else
      ``model(example)`` when it is callable; the result is described by the same rules with
      the name ``output-0`` (a tuple or list of arrays gives ``output-0``, ``output-1``, ...).
      When the model also has ``predict_proba``, its result is one more output named
      ``predict_proba`` (a server may offer it);
    * without an example, a model that says how many features it takes (scikit-learn's
      ``n_features_in_``, with ``feature_names_in_`` when it was fitted on a frame) gets its
      inputs from that, and its outputs from a one-row example of zeros.

Invariants: inference never raises and never warns: whatever cannot be described (an unknown
type or dtype, a model that fails on the example) gives ``None``, and the version is
registered without a signature. At most the first two rows of an example are passed to the
model, so a large example costs little. numpy and pandas are imported only for values that
are theirs.

Must not depend on: the runner, notebooks, the CLI.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from typing import Any

from cellpipe.registry.model import Signature, TensorSpec

__all__ = ["EXAMPLE_ROWS", "example_inputs", "infer_signature", "oip_datatype", "tensor_specs"]

EXAMPLE_ROWS = 5
"""Rows of an input example kept with a version."""

EXAMPLE_MAX_BYTES = 64 * 1024
"""The largest input example kept, as JSON (a wider one is not stored)."""

_ROWS = 2
"""Rows of an example passed to the model to see what it returns."""

_KINDS = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}


def oip_datatype(dtype: Any) -> str | None:
    """Return the OIP data type of a numpy or pandas dtype, or None when it has none.

    Strings, bytes, objects and pandas categories and strings are ``BYTES``.
    """
    kind = getattr(dtype, "kind", None)
    if kind in ("U", "S", "O"):
        return "BYTES"
    if type(dtype).__name__ in ("CategoricalDtype", "StringDtype"):
        return "BYTES"
    numpy_dtype = getattr(dtype, "numpy_dtype", None)  # pandas nullable Int64, boolean, ...
    if numpy_dtype is not None and kind not in _KIND_LETTERS:
        return oip_datatype(numpy_dtype)
    itemsize = getattr(dtype, "itemsize", None)
    if not isinstance(kind, str) or not isinstance(itemsize, int):
        return None
    return _KINDS.get((kind, itemsize))


_KIND_LETTERS = {k for k, _ in _KINDS}


def _is_array(value: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def _is_frame(value: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, pd.DataFrame)


def _is_series(value: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, pd.Series)


def _array_spec(array: Any, name: str) -> TensorSpec | None:
    datatype = oip_datatype(array.dtype)
    if datatype is None:
        return None
    shape = tuple(int(d) for d in array.shape)
    return TensorSpec(name=name, datatype=datatype, shape=(-1, *shape[1:]) if shape else ())


def tensor_specs(value: Any, *, name: str = "input-0") -> tuple[TensorSpec, ...] | None:
    """Describe a value as OIP tensors (see the module's rules), or None when it cannot be.

    Args:
        value: an array, frame, series, list, tuple or dict of those.
        name: the tensor's name when the value does not name it.
    """
    try:
        return _specs(value, name)
    except Exception:  # any surprise means "cannot describe it", never an error
        return None


def _specs(value: Any, name: str) -> tuple[TensorSpec, ...] | None:
    if _is_array(value):
        spec = _array_spec(value, name)
        return None if spec is None else (spec,)
    if _is_frame(value):
        specs = []
        for column in value.columns:
            datatype = oip_datatype(value[column].dtype)
            if datatype is None:
                return None
            specs.append(TensorSpec(name=str(column), datatype=datatype, shape=(-1,)))
        return tuple(specs) or None
    if _is_series(value):
        datatype = oip_datatype(value.dtype)
        label = name if value.name is None else str(value.name)
        return (
            None if datatype is None else (TensorSpec(name=label, datatype=datatype, shape=(-1,)),)
        )
    if isinstance(value, Mapping) and value:
        specs = []
        for key, item in value.items():
            found = _specs(item if _is_array(item) else _asarray(item), str(key))
            if found is None or len(found) != 1:
                return None
            specs.append(found[0])
        return tuple(specs)
    if isinstance(value, list | tuple) and value:
        array = _asarray(value)
        return None if array is None else _specs(array, name)
    return None


def _asarray(value: Any) -> Any:
    try:
        import numpy as np  # lists only: the caller already holds numpy values otherwise
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            return None
    return None if array.dtype.kind == "O" and array.ndim != 1 else array


def _outputs(result: Any, name: str) -> tuple[TensorSpec, ...] | None:
    if (
        isinstance(result, tuple | list)
        and result
        and all(_is_array(r) or _is_frame(r) or _is_series(r) for r in result)
    ):
        specs: list[TensorSpec] = []
        for i, item in enumerate(result):
            found = _specs(item, f"output-{i}")
            if found is None:
                return None
            specs.extend(found)
        return tuple(specs)
    return _specs(result, name)


def _head(example: Any) -> Any:
    """The first rows of an example (the whole example when it has no rows)."""
    if _is_frame(example) or _is_series(example):
        return example.iloc[:_ROWS]
    if _is_array(example) and example.ndim >= 1:
        return example[:_ROWS]
    if isinstance(example, list | tuple):
        return example[:_ROWS]
    return example


def _example_from_model(model: Any) -> Any:
    """A one-row example of zeros for a model that says how many features it takes."""
    count = getattr(model, "n_features_in_", None)
    if not isinstance(count, int) or count < 1:
        return None
    import numpy as np  # scikit-learn models: numpy is loaded already

    names = getattr(model, "feature_names_in_", None)
    if names is not None and len(names) == count:
        import pandas as pd

        return pd.DataFrame(np.zeros((1, count)), columns=[str(n) for n in names])
    return np.zeros((1, count))


def infer_signature(model: Any, example: Any = None) -> Signature | None:
    """Return the model's inputs and outputs as OIP tensors, or None when they are unknown.

    Args:
        model: the model object.
        example: an input example (array, frame, series, list, dict of columns); None tries
            the model's own ``n_features_in_``.

    Returns:
        The signature; its outputs are empty when the model could not be called.

    Example::

        infer_signature(forest, X_test)   # inputs: one FP64 [-1] tensor per column
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if example is None:
                example = _example_from_model(model)
            if example is None:
                return None
            inputs = tensor_specs(example)
            if inputs is None:
                return None
            return Signature(inputs=inputs, outputs=_call(model, _head(example)))
    except Exception:  # never an error: a version without a signature is still a version
        return None


def _call(model: Any, example: Any) -> tuple[TensorSpec, ...]:
    outputs: list[TensorSpec] = []
    try:
        if callable(getattr(model, "predict", None)):
            result = model.predict(example)
        elif callable(model) and not isinstance(model, type):
            result = model(example)
        else:
            return ()
    except Exception:
        return ()
    found = _outputs(result, "output-0")
    if found is None:
        return ()
    outputs.extend(found)
    proba = getattr(model, "predict_proba", None)
    if callable(proba):
        try:
            extra = _specs(proba(example), "predict_proba")
        except Exception:
            extra = None
        if extra is not None and len(extra) == 1:
            outputs.append(extra[0])
    return tuple(outputs)


def example_inputs(example: Any) -> list[dict[str, Any]] | None:
    """Return the first `EXAMPLE_ROWS` rows of ``example`` as an OIP request's ``inputs``.

    The tensors are those `tensor_specs` describes (a frame: one 1-D tensor per column), with
    the real number of rows in the shape and the values row-major in ``data``; ``BYTES``
    values are text. None when the example cannot be described, holds NaN or an infinity
    (JSON cannot carry them), or is larger than `EXAMPLE_MAX_BYTES` as JSON.

    Example::

        example_inputs(X_test)  # [{"name": "alcohol", "datatype": "FP64", "shape": [5],
                                #   "data": [13.2, ...]}, ...]
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inputs = _example_tensors(_rows(example))
    except Exception:  # any surprise means "no example", never an error
        return None
    if not inputs:
        return None
    import json

    try:
        size = len(json.dumps(inputs, allow_nan=False))
    except (TypeError, ValueError):
        return None
    return inputs if size <= EXAMPLE_MAX_BYTES else None


def _rows(example: Any) -> Any:
    if _is_frame(example) or _is_series(example):
        return example.iloc[:EXAMPLE_ROWS]
    if _is_array(example) and example.ndim >= 1:
        return example[:EXAMPLE_ROWS]
    if isinstance(example, list | tuple):
        return example[:EXAMPLE_ROWS]
    if isinstance(example, Mapping):
        return {k: _rows(v if _is_array(v) else _asarray(v)) for k, v in example.items()}
    return example


def _tensor(spec: TensorSpec, array: Any) -> dict[str, Any] | None:
    import numpy as np  # the caller holds numpy or pandas values

    values = np.asarray(array)
    if spec.datatype == "BYTES":
        data: list[Any] = []
        for item in values.reshape(-1).tolist():
            if isinstance(item, bytes):
                item = item.decode("utf-8")  # undecodable bytes: no example (caller catches)
            elif not isinstance(item, str):
                return None
            data.append(item)
    else:
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            return None
        data = values.reshape(-1).tolist()
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(values.shape), "data": data}


def _example_tensors(rows: Any) -> list[dict[str, Any]] | None:
    specs = tensor_specs(rows)
    if specs is None:
        return None
    if _is_frame(rows):
        columns = [rows[c].to_numpy() for c in rows.columns]
    elif isinstance(rows, Mapping):
        columns = list(rows.values())
    elif _is_series(rows):
        columns = [rows.to_numpy()]
    elif _is_array(rows):
        columns = [rows]
    else:
        columns = [_asarray(rows)]
    if len(columns) != len(specs):
        return None
    tensors = []
    for spec, column in zip(specs, columns, strict=True):
        tensor = _tensor(spec, column)
        if tensor is None:
            return None
        tensors.append(tensor)
    return tensors
