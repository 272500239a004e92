"""Model adapters: how a registered Python object answers an inference request.

Owns: `ModelAdapter` (expected inputs, producible outputs, the call) and `adapt`, which picks
an adapter for an object or says clearly why it cannot be served. Two kinds:

- an object with ``predict`` (scikit-learn and alike): the request's input tensors become one
  2-D array ``X`` (one input: the tensor itself; several inputs: one column block each, in the
  signature's order), or a pandas DataFrame when the object was fitted on named columns
  (``feature_names_in_``). Outputs: ``predict`` (the default) and, when the object has
  ``predict_proba``, ``predict_proba``, computed only when a request names it. With a
  signature, its first output names ``predict`` and its second ``predict_proba``.
- a plain callable: called with the input arrays in the signature's order; it may return one
  array (output ``output-0`` or the signature's first output), a tuple (one output each) or a
  dict (named outputs).

Invariants: inputs are numpy arrays already checked against the declared datatype and shape;
a `DATA_ERRORS` exception the model raises on the request's values becomes `ModelRefused`
(the protocol answers 400 with its reason), any other exception propagates (500); a problem
with the request itself raises `RequestError` (HTTP 400), as does a ``predict`` request with
no rows (scikit-learn refuses zero samples).

Must not depend on: the web framework, the runner, kfp or notebooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellpipe.errors import ServingError
from cellpipe.registry.model import ModelVersion, TensorSpec
from cellpipe.serving.tensors import RequestError, datatype_of

__all__ = ["DATA_ERRORS", "ModelAdapter", "ModelRefused", "adapt", "platform_of"]

DATA_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    ArithmeticError,
)
"""What a model raising on the client's values raises (scikit-learn: ValueError)."""


class ModelRefused(Exception):
    """The model raised one of `DATA_ERRORS` on the request's values (``__cause__``)."""


def _guarded(function: Callable[..., Any], *args: Any) -> Any:
    """Call the model; its data errors become `ModelRefused`, never mistaken for ours."""
    try:
        return function(*args)
    except DATA_ERRORS as exc:
        raise ModelRefused(str(exc)) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelAdapter:
    """What the server knows about one loaded model version.

    Attributes:
        kind: ``predict`` or ``callable``.
        inputs: the expected input tensors, in order; empty: any one input tensor.
        outputs: the outputs the model can produce (empty: known only after a call).
        default_outputs: the outputs returned when a request names none (empty: all).
        call: ``call(inputs, wanted)`` returns ``{output name: array}``; ``wanted`` is the
            requested output names (empty: the defaults).
    """

    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    default_outputs: tuple[str, ...]
    call: Callable[[Mapping[str, np.ndarray[Any, Any]], Sequence[str]], dict[str, Any]]


def platform_of(version: ModelVersion) -> str:
    """Return the OIP platform string ``<framework>_<serializer>`` (``sklearn_joblib``)."""
    module = version.artifact.type_name.split(".", 1)[0]
    framework = "python" if module in ("", "builtins", "__main__") else module
    return f"{framework}_{version.artifact.serializer}"


def _ordered(
    expected: tuple[TensorSpec, ...], inputs: Mapping[str, np.ndarray[Any, Any]]
) -> list[np.ndarray[Any, Any]]:
    if expected and all(spec.name in inputs for spec in expected):
        return [inputs[spec.name] for spec in expected]
    return list(inputs.values())  # no signature, or one [N, columns] matrix (KServe's form)


def _design_matrix(
    obj: Any, arrays: list[np.ndarray[Any, Any]], names: list[str], *, columns: bool
) -> Any:
    """Assemble ``X`` for ``predict`` from the input arrays.

    ``columns``: the signature gives one 1-D tensor per column (a model fitted on a frame),
    so even a single 1-D input is one column, not one row.
    """
    feature_names = getattr(obj, "feature_names_in_", None)
    one_column = arrays[0].ndim == 1 and (columns or getattr(obj, "n_features_in_", 0) == 1)
    if len(arrays) == 1 and not one_column:
        x = arrays[0]
    else:
        rows = {a.shape[0] for a in arrays if a.ndim}
        if len(rows) != 1 or any(a.ndim == 0 or a.ndim > 2 for a in arrays):
            raise RequestError(
                "the inputs of a predict model must be 1-D or 2-D with the same number of "
                f"rows, got shapes {[list(a.shape) for a in arrays]}"
            )
        blocks = [a.reshape(a.shape[0], -1) for a in arrays]
        if len({b.dtype for b in blocks}) > 1:
            import pandas as pd  # mixed dtypes keep their own column types in a frame

            labels = [
                name if b.shape[1] == 1 else f"{name}_{i}"
                for name, b in zip(names, blocks, strict=True)
                for i in range(b.shape[1])
            ]
            if feature_names is not None and len(feature_names) == len(labels):
                labels = [str(c) for c in feature_names]
            return pd.DataFrame(dict(zip(labels, _columns(blocks), strict=True)))
        x = np.concatenate(blocks, axis=1)
    width = getattr(obj, "n_features_in_", None)
    if isinstance(width, int) and x.ndim != 2:
        # A fitted estimator takes rows of features; any other rank is the client's mistake
        # (scikit-learn's own ValueError would be reported as the model failing, a 500).
        raise RequestError(
            f"the model takes a 2-D tensor [rows, {width}], the request has shape {list(x.shape)}"
        )
    if isinstance(width, int) and x.shape[1] != width:
        raise RequestError(
            f"the model expects {width} features per row, the request has {x.shape[1]}"
        )
    if feature_names is not None and x.ndim == 2 and x.shape[1] == len(feature_names):
        import pandas as pd  # fitted on a frame: predict checks the column names

        return pd.DataFrame(x, columns=list(feature_names))
    return x


def _columns(blocks: list[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
    return [b[:, i] for b in blocks for i in range(b.shape[1])]


def _predict_adapter(obj: Any, version: ModelVersion) -> ModelAdapter:
    signature = version.signature
    sig_outputs = signature.outputs if signature else ()
    classes = getattr(obj, "classes_", None)
    if sig_outputs:
        predict_spec = sig_outputs[0]
    else:
        dtype = "FP64"
        if classes is not None:
            try:
                dtype = datatype_of(np.asarray(classes))
            except ServingError:
                dtype = "FP64"
        predict_spec = TensorSpec(name="predict", datatype=dtype, shape=(-1,))
    outputs = [predict_spec]
    has_proba = callable(getattr(obj, "predict_proba", None))
    if has_proba:
        width = len(classes) if classes is not None else -1
        proba_spec = (
            sig_outputs[1]
            if len(sig_outputs) > 1
            else TensorSpec(name="predict_proba", datatype="FP64", shape=(-1, width))
        )
        outputs.append(proba_spec)
    expected = signature.inputs if signature else ()
    names = [spec.name for spec in expected]
    by_column = bool(expected) and all(len(spec.shape) == 1 for spec in expected)

    def call(inputs: Mapping[str, np.ndarray[Any, Any]], wanted: Sequence[str]) -> dict[str, Any]:
        arrays = _ordered(expected, inputs)
        x = _design_matrix(obj, arrays, names or list(inputs), columns=by_column)
        if getattr(x, "ndim", 2) >= 1 and len(x) == 0:
            raise RequestError(
                f"the request has no rows (input shapes {[list(a.shape) for a in arrays]}); "
                "a predict model needs at least one",
                hint="send one or more rows",
            )
        result: dict[str, Any] = {}
        for name in wanted or (predict_spec.name,):
            if name == predict_spec.name:
                result[name] = _guarded(obj.predict, x)
            else:
                result[name] = _guarded(obj.predict_proba, x)
        return result

    return ModelAdapter(
        kind="predict",
        inputs=expected,
        outputs=tuple(outputs),
        default_outputs=(predict_spec.name,),
        call=call,
    )


def _callable_adapter(obj: Callable[..., Any], version: ModelVersion) -> ModelAdapter:
    signature = version.signature
    expected = signature.inputs if signature else ()
    sig_outputs = signature.outputs if signature else ()

    def call(inputs: Mapping[str, np.ndarray[Any, Any]], wanted: Sequence[str]) -> dict[str, Any]:
        value = _guarded(obj, *_ordered(expected, inputs))
        if isinstance(value, Mapping):
            produced = {str(k): v for k, v in value.items()}
        else:
            values = value if isinstance(value, tuple) else (value,)
            names = [
                sig_outputs[i].name if i < len(sig_outputs) else f"output-{i}"
                for i in range(len(values))
            ]
            produced = dict(zip(names, values, strict=True))
        unknown = [name for name in wanted if name not in produced]
        if unknown:
            raise RequestError(
                f"unknown output {unknown[0]!r}; the model produces {sorted(produced)}"
            )
        return {name: produced[name] for name in wanted} if wanted else produced

    return ModelAdapter(
        kind="callable",
        inputs=expected,
        outputs=sig_outputs,
        default_outputs=(),
        call=call,
    )


def adapt(obj: Any, version: ModelVersion) -> ModelAdapter:
    """Return the adapter that serves ``obj``, the loaded object of ``version``.

    Raises:
        ServingError: when the object has neither ``predict`` nor is a plain callable.
    """
    if callable(getattr(obj, "predict", None)) and not isinstance(obj, type):
        return _predict_adapter(obj, version)
    if callable(obj) and not isinstance(obj, type):
        return _callable_adapter(obj, version)
    what = "a class" if isinstance(obj, type) else f"a {type(obj).__module__}.{type(obj).__name__}"
    raise ServingError(
        f"model {version.ref} is {what}, which cannot be served",
        hint="register an object with a predict method (a fitted scikit-learn estimator or "
        "pipeline, or alike) or a plain function that takes arrays and returns arrays",
    )
