"""The step runtime embedded in every compiled KFP component (cellpipe is NOT installed in pods).

Owns: `run_step`, called by the component function that kfp's lightweight executor
(``python3 -m kfp.dsl.executor_main``) runs. It binds the step's parameters, runs the imports
and functions cells, loads the input artifacts, runs the step's cells, saves the outputs as
artifacts, logs the step's pipeline metrics on its ``system.Metrics`` output and writes the
captured outputs of every cell as a ``system.HTML`` report.

Artifact formats (sniffed on load, recorded as ``format`` in the artifact metadata):
``json`` for plain JSON data, ``npy`` for numeric numpy arrays, ``pickle`` for anything else
(cloudpickle when the pod has it, so functions and classes of the notebook travel by value).

The pseudo-variable ``__random_state__`` (``cellpipe.pipeline.RANDOM_STATE``) is never bound:
as an input it restores the global generators (``random``, numpy's legacy global
``RandomState``, torch's CPU generator when the code imported torch), as an output it stores
their state, as JSON in the format of ``cellpipe.runner._rng``. A figure that cannot be
rendered is a warning on stderr, never the step's error.

Invariants: this file is copied verbatim at the top of each component's module, so it imports
only the standard library at module level, does not use ``from __future__`` (kfp's executor
reads the component function's annotations as objects) and defines only ``_cp``-prefixed
names besides `run_step`. User code runs in a fresh ``__main__`` module, as in the local
runner, never in this module's globals. Errors in user code propagate: the pod must fail.

Must not depend on: cellpipe (or anything outside the standard library and the step's own
packages); kfp is only touched through the artifact objects the executor passes in.
"""

import ast
import base64
import builtins
import html
import io
import json
import linecache
import math
import os
import pickle
import sys
import traceback
import types
from importlib.util import find_spec
from pathlib import Path
from typing import Any

_CP_JSON_MAX = 1024 * 1024
_CP_RANDOM_STATE = "__random_state__"
_CP_MAGICS_IGNORED = ("pip", "matplotlib", "load_ext", "config")


class _CpShell:
    """The part of IPython's shell a compiled step may call: harmless line magics only."""

    def run_line_magic(self, name: str, line: str, *args: Any) -> None:
        if name not in _CP_MAGICS_IGNORED:
            raise RuntimeError(f"IPython magic %{name} is not available in a pipeline step")

    def system(self, command: str) -> None:
        raise RuntimeError(f"shell command !{command} is not available in a pipeline step")


class _CpTee(io.TextIOBase):
    """A text stream writing to the pod log and to the current cell's captured text."""

    def __init__(self, stream: Any, sink: list[str]) -> None:
        self._stream = stream
        self._sink = sink

    def write(self, text: str) -> int:
        self._stream.write(text)
        self._sink.append(text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def _cp_is_json(value: Any, depth: int = 0) -> bool:
    if depth > 100:
        return False
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) is list:
        return all(_cp_is_json(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _cp_is_json(v, depth + 1) for k, v in value.items())
    return False


def _cp_save(value: Any, path: str) -> str:
    """Write ``value`` to ``path`` and return the format used."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if _cp_is_json(value):
        text = json.dumps(value, separators=(",", ":"))
        if len(text) <= _CP_JSON_MAX:
            target.write_text(text, encoding="utf-8")
            return "json"
    np = sys.modules.get("numpy")
    if np is not None and type(value) is np.ndarray and not value.dtype.hasobject:
        with target.open("wb") as f:
            np.save(f, value, allow_pickle=False)
        return "npy"
    try:
        import cloudpickle as pickler
    except ImportError:
        pickler = pickle
    with target.open("wb") as f:
        pickler.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    return "pickle"


def _cp_load(path: str) -> Any:
    """Read back a value written by `_cp_save` (the format is sniffed from the bytes)."""
    source = Path(path)
    with source.open("rb") as f:
        head = f.read(6)
    if head.startswith(b"\x93NUMPY"):
        import numpy

        return numpy.load(path, allow_pickle=False)
    if head.startswith(b"\x80"):
        with source.open("rb") as f:
            return pickle.load(f)
    return json.loads(source.read_text(encoding="utf-8"))


def _cp_scalar(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", ()) == ():
        try:
            converted = item()
        except (TypeError, ValueError):
            return None
        if isinstance(converted, bool | int | float | str):
            return converted
    return None


def _cp_coerce(value: Any, kind: str) -> Any:
    # Parameter values cross KFP as protobuf Values: every number is a double on the way.
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in ("list", "dict") and isinstance(value, str):
        return json.loads(value)
    return value


def _cp_cellpipe_shim(logged: dict[str, Any]) -> types.ModuleType:
    """A stand-in for ``import cellpipe`` inside a pod: ``log_metric``; ``register_model``.

    ``register_model`` registers into the local project's registry, which a pod does not
    have: there it only says so (the model, as a step output, is already a KFP artifact) and
    returns None, so a notebook that registers its model still runs on the cluster.
    """
    module = types.ModuleType("cellpipe")

    def log_metric(name: str, value: Any) -> None:
        scalar = _cp_scalar(value)
        if not isinstance(name, str) or not name or scalar is None:
            raise TypeError(f"log_metric({name!r}, ...): needs a name and a scalar value")
        logged[name] = scalar

    def register_model(obj: Any, name: str, **options: Any) -> None:
        del obj, options
        sys.stdout.write(
            f"[cellpipe] register_model({name!r}): not registered on the cluster (the model "
            "registry is the local project's); a step output is stored as a KFP artifact\n"
        )

    module.log_metric = log_metric  # type: ignore[attr-defined]
    module.register_model = register_model  # type: ignore[attr-defined]
    return module


def _cp_capture_rng() -> dict[str, Any]:
    """The global generators' state (the format of ``cellpipe.runner._rng``)."""
    import random

    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"format": 1, "random": [version, list(internal), gauss]}
    np = sys.modules.get("numpy")
    if np is not None and hasattr(np, "random"):
        name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state["numpy"] = [str(name), [int(k) for k in keys], int(pos), int(has_gauss), cached]
    torch: Any = sys.modules.get("torch")
    if callable(getattr(torch, "get_rng_state", None)):
        state["torch"] = [int(b) for b in torch.get_rng_state().tolist()]
    return state


def _cp_restore_rng(state: Any) -> None:
    import random

    if not isinstance(state, dict) or state.get("format") != 1 or "random" not in state:
        raise ValueError("input __random_state__ is not a random state written by cellpipe")
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        import numpy

        name, keys, pos, has_gauss, cached = state["numpy"]
        numpy.random.set_state(
            (name, numpy.asarray(keys, dtype=numpy.uint32), pos, has_gauss, cached)
        )
    torch: Any = sys.modules.get("torch")
    if "torch" in state and callable(getattr(torch, "set_rng_state", None)):
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def _cp_figures() -> list[str]:
    if "matplotlib.pyplot" not in sys.modules:
        return []
    plt = sys.modules["matplotlib.pyplot"]
    images = []
    try:
        for number in plt.get_fignums():
            try:
                buffer = io.BytesIO()
                plt.figure(number).savefig(buffer, format="png", bbox_inches="tight")
                images.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
            except Exception as exc:  # a rendering problem is a warning, as in Jupyter
                sys.stderr.write(
                    f"[cellpipe] warning: figure {number} could not be rendered: "
                    f"{type(exc).__name__}: {exc}\n"
                )
    finally:
        try:
            plt.close("all")
        except Exception as exc:
            sys.stderr.write(f"[cellpipe] warning: figures could not be closed: {exc}\n")
    return images


def _cp_display(value: Any) -> str:
    to_html = getattr(value, "_repr_html_", None)
    if callable(to_html):
        try:
            text = to_html()
        except Exception:
            text = None
        if isinstance(text, str):
            return text
    return f"<pre>{html.escape(repr(value))}</pre>"


def _cp_run_cell(cell: int, code: str, namespace: dict[str, Any], notebook: str) -> list[str]:
    """Run one cell like Jupyter does and return its outputs as HTML fragments."""
    filename = f"{notebook} [cell {cell}]"
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    tree = ast.parse(code, filename=filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
        last = ast.Expression(tree.body.pop().value)  # type: ignore[attr-defined]
    captured: list[str] = []
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _CpTee(saved[0], captured), _CpTee(saved[1], captured)
    try:
        exec(compile(tree, filename, "exec"), namespace)
        value = None if last is None else eval(compile(last, filename, "eval"), namespace)
    finally:
        sys.stdout, sys.stderr = saved
    fragments = [f"<pre>{html.escape(''.join(captured))}</pre>"] if captured else []
    if value is not None:
        fragments.append(_cp_display(value))
    fragments.extend(f'<img src="data:image/png;base64,{i}"/>' for i in _cp_figures())
    return fragments


def _cp_report(spec: dict[str, Any], sections: list[tuple[int, str, list[str]]]) -> str:
    title = html.escape(f"{spec['notebook']}: step {spec['step']}")
    parts = [
        "<!DOCTYPE html>",
        f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>",
        f"<h1>{title}</h1>",
    ]
    for cell, code, fragments in sections:
        parts.append(f"<h3>cell {cell}</h3>")
        parts.append(f"<pre style='background:#f4f4f4'>{html.escape(code)}</pre>")
        parts.extend(fragments)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def run_step(spec: dict[str, Any], arguments: dict[str, Any]) -> None:
    """Run one compiled step inside kfp's executor.

    Args:
        spec: the step as the compiler embedded it: ``step``, ``notebook``, ``image``,
            ``preamble`` and ``cells`` (``[cell, code]`` pairs), ``parameters`` (key ->
            ``[name, type]``), ``inputs`` and ``outputs`` (key -> variable), ``metrics``
            (pipeline metric names), ``metrics_key`` and ``report_key`` (or None).
        arguments: the component function's arguments as kfp's executor passed them.

    Raises:
        Exception: whatever the user's code raised (the pod fails with its traceback).
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    module = types.ModuleType("__main__")
    namespace = module.__dict__
    namespace["__builtins__"] = builtins
    shell = _CpShell()
    namespace["get_ipython"] = lambda: shell
    logged: dict[str, Any] = {}
    saved_main = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    if find_spec("cellpipe") is None:  # pods normally do not have cellpipe installed
        sys.modules["cellpipe"] = _cp_cellpipe_shim(logged)
    for key, (name, kind) in spec["parameters"].items():
        namespace[name] = _cp_coerce(arguments[key], kind)
    sections: list[tuple[int, str, list[str]]] = []
    try:
        for cell, code in spec["preamble"]:
            _cp_section(sections, cell, code, namespace, spec["notebook"])
        for key, variable in spec["inputs"].items():
            if variable == _CP_RANDOM_STATE:
                _cp_restore_rng(_cp_load(arguments[key].path))
            else:
                namespace[variable] = _cp_load(arguments[key].path)
        for cell, code in spec["cells"]:
            _cp_section(sections, cell, code, namespace, spec["notebook"])
        for key, variable in spec["outputs"].items():
            if variable == _CP_RANDOM_STATE:
                value = _cp_capture_rng()
            elif variable not in namespace:
                raise NameError(f"step '{spec['step']}' finished without defining '{variable}'")
            else:
                value = namespace[variable]
            artifact = arguments[key]
            fmt = _cp_save(value, artifact.path)
            artifact.metadata.update(
                {
                    "format": fmt,
                    "variable": variable,
                    "python_type": f"{type(value).__module__}.{type(value).__qualname__}",
                    "step": spec["step"],
                    "image": spec["image"],
                }
            )
        if spec["metrics_key"] is not None:
            values = dict(logged)
            for name in spec["metrics"]:
                scalar = _cp_scalar(namespace.get(name))
                if scalar is not None:
                    values[name] = scalar
                elif name in namespace:  # KFP's Metrics hold numbers: say so, never drop quietly
                    sys.stderr.write(
                        f"cellpipe warning: metric '{name}' of step '{spec['step']}' is a "
                        f"{type(namespace[name]).__name__}, not a number, and KFP's Metrics "
                        "artifact holds numbers only: not logged there (a local run records "
                        "it as JSON)\n"
                    )
            metrics = arguments[spec["metrics_key"]]
            for name in sorted(values):
                if isinstance(values[name], float) and not math.isfinite(values[name]):
                    # KFP cannot store NaN or infinity (its protobuf Value refuses them, and
                    # the whole task would fail); the local run records them as null too.
                    sys.stderr.write(
                        f"cellpipe warning: metric '{name}' of step '{spec['step']}' is "
                        f"{values[name]!r}, which KFP's Metrics artifact cannot hold: not "
                        "logged there (recorded as null)\n"
                    )
                    values[name] = None
                    continue
                metrics.log_metric(name, values[name])
            _cp_write(metrics.path, json.dumps(values, sort_keys=True, allow_nan=False))
    finally:
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
        if spec["report_key"] is not None:
            _cp_write(arguments[spec["report_key"]].path, _cp_report(spec, sections))


def _cp_section(
    sections: list[tuple[int, str, list[str]]],
    cell: int,
    code: str,
    namespace: dict[str, Any],
    notebook: str,
) -> None:
    fragments: list[str] = []
    sections.append((cell, code, fragments))
    try:
        fragments.extend(_cp_run_cell(cell, code, namespace, notebook))
    except BaseException:
        error = html.escape(traceback.format_exc())
        fragments.append(f"<pre style='color:#b00'>{error}</pre>")
        raise


def _cp_write(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
