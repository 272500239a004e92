"""The fidelity harness: run a tagged notebook in Jupyter and as a pipeline, and compare.

What it owns: the two executions of one notebook and their comparison.

- Jupyter's way: the notebook's code cells not tagged ``skip`` run top to bottom with nbclient
  in one real ipykernel (kernel name ``python3``, from a kernel spec written in a temporary
  folder that points at ``sys.executable``, so a fresh ``make test`` machine needs nothing
  else), with a temporary copy of the notebook's folder as working directory. After the last
  cell one more cell prints the values of the pipeline metrics (the names of the
  ``pipeline-metrics`` cell) as JSON. The kernel is shut down when the notebook ends, also
  when a cell raised or the test failed (``NotebookClient.setup_kernel``).
- cellpipe's way: ``cellpipe run NB --json`` in a subprocess, in another temporary copy of the
  folder (a fresh ``.cellpipe``: nothing is cached). The metrics are the run summary's
  ``metrics``; the printed output of each cell is read from the run's executed notebook
  (``run.ipynb``, cells carry ``metadata.cellpipe.cell``).
- The comparison: the metrics must be equal (floats exactly: both sides go through JSON, whose
  float text round-trips), and the printed stdout of every cell that belongs to a step must be
  equal, in order, per cell. The imports, functions, parameters and metrics cells are not
  compared (the pipeline runs the first three once per process and never runs the last), nor
  are cells before the first step. Lines that report timing (``%%time``: ``CPU times:``,
  ``Wall time:``) and IPython's ``Error in callback <function ... at 0x...>`` report (a figure
  that cannot be drawn, item 10) are dropped on both sides; nothing else is normalised.
- cellpipe runs first: when its run fails, the kernel is not started (there is nothing to
  compare, and the test fails with the run's output).

Percent scripts are converted to nbformat here, with jupytext's conventions (a non-comment
header before the first ``# %%`` is a code cell; ``# %% [markdown]`` cells; a marker is ``# %%``
followed by a blank or the line end; commented magics such as ``# %%time`` are uncommented),
independently of cellpipe's own reader, so the two sides share no parser.

This module must not import cellpipe: the reference execution may not depend on the code
under test.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

STEP_PREFIXES = ("step:", "block:")
NOT_COMPARED_TAGS = frozenset({"imports", "functions", "pipeline-parameters", "pipeline-metrics"})
# Lines that are not the notebook's output: `%%time` reports, and IPython's own report of a
# post-execute callback that raised (a figure that cannot be drawn, item 10), which carries an
# object address.
TIMING_LINE = re.compile(r"^(CPU times:|Wall time:|Error in callback <function \w+ at 0x)")
CLI = "from cellpipe.cli.main import entry; entry()"
# What a notebook may take at most to run one way (kernel start included).
TIMEOUT_S = 180


# -- notebooks -----------------------------------------------------------------------------


def read_any(path: Path) -> nbformat.NotebookNode:
    """Read an .ipynb with nbformat, or convert a percent script like jupytext would."""
    if path.suffix == ".ipynb":
        return nbformat.read(path, as_version=4)
    return percent_to_notebook(path.read_text(encoding="utf-8"))


# A marker is `# %%` then a blank or the end of the line; `# %%time` is a commented magic.
_MARKER = re.compile(r"^#\s?%%(?P<rest>(\s.*)?)$")
_TAGS = re.compile(r"\btags\s*=\s*(?P<json>\[[^\]]*\])")
_MAGIC = re.compile(r"^(?P<indent>\s*)#\s?(?P<magic>%%?[A-Za-z_]|![A-Za-z.~/$])")


def percent_to_notebook(text: str) -> nbformat.NotebookNode:
    """Convert a jupytext percent script to a v4 notebook (jupytext's cell rules)."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "# ---":  # the jupytext YAML header is metadata
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "# ---")
        lines = lines[end + 1 :]
    header: list[str] = []
    chunks: list[tuple[str, list[str], list[str]]] = []
    for line in lines:
        match = _MARKER.match(line)
        if match is None:
            (chunks[-1][2] if chunks else header).append(line)
            continue
        rest = match["rest"]
        kind = "markdown" if re.search(r"\[(markdown|md)\]", rest) else "code"
        tags_match = _TAGS.search(rest)
        tags = json.loads(tags_match["json"]) if tags_match else []
        chunks.append((kind, tags, []))
    nb = nbformat.v4.new_notebook()
    if any(line.strip() and not line.lstrip().startswith("#") for line in header):
        nb.cells.append(nbformat.v4.new_code_cell(_body(header, "code")))
    for kind, tags, body in chunks:
        if kind == "markdown":
            text_lines = [re.sub(r"^# ?", "", line) for line in _trim(body)]
            nb.cells.append(nbformat.v4.new_markdown_cell("\n".join(text_lines)))
        else:
            cell = nbformat.v4.new_code_cell(_body(body, "code"))
            if tags:
                cell.metadata["tags"] = tags
            nb.cells.append(cell)
    return nb


def _trim(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    return lines[:end]


def _body(lines: list[str], kind: str) -> str:
    body = _trim(lines)
    if kind == "code":
        body = [_MAGIC.sub(r"\g<indent>\g<magic>", line) for line in body]
    return "\n".join(body)


def tags_of(cell: nbformat.NotebookNode) -> list[str]:
    return [str(t) for t in cell.get("metadata", {}).get("tags", [])]


def metric_names(nb: nbformat.NotebookNode) -> list[str]:
    """The variable names of the ``pipeline-metrics`` cells (``acc`` or ``print(acc)``)."""
    names: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "pipeline-metrics" in tags_of(cell):
            for statement in ast.parse(cell.source).body:
                for node in ast.walk(statement):
                    if isinstance(node, ast.Name) and node.id != "print" and node.id not in names:
                        names.append(node.id)
    return names


def compared_cells(nb: nbformat.NotebookNode) -> list[int]:
    """1-based numbers of the code cells whose printed output is compared (see module doc)."""
    numbers: list[int] = []
    in_steps = False
    for number, cell in enumerate(nb.cells, 1):
        if cell.cell_type != "code":
            continue
        tags = tags_of(cell)
        if any(t.startswith(STEP_PREFIXES) for t in tags):
            in_steps = True
        if "skip" in tags or NOT_COMPARED_TAGS.intersection(tags) or not in_steps:
            continue
        numbers.append(number)
    return numbers


def printed(outputs: list[Any]) -> list[str]:
    """The stdout lines of one cell's outputs, timing lines dropped."""
    text = "".join(
        o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
        for o in outputs
        if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )
    return [line for line in text.splitlines() if not TIMING_LINE.match(line)]


# -- the two executions --------------------------------------------------------------------


@dataclass
class Execution:
    """What one way of running produced."""

    metrics: dict[str, Any]
    printed: dict[int, list[str]] = field(default_factory=dict)  # cell number -> stdout lines
    error: str | None = None  # why it did not finish (traceback text, CLI output)


def copy_folder(source: Path, target: Path) -> Path:
    """Copy the notebook's folder (without .cellpipe state) to ``target``."""
    shutil.copytree(
        source, target, ignore=shutil.ignore_patterns(".cellpipe", "__pycache__", "*.pyc")
    )
    return target


def write_kernel_spec(folder: Path) -> Path:
    """A ``python3`` kernel spec under ``folder`` that starts ipykernel in this interpreter."""
    spec_dir = folder / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (cellpipe fidelity)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return folder / "kernels"


_METRICS_CELL = """\
import json as _fidelity_json

def _fidelity_plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")

print("__FIDELITY_METRICS__" + _fidelity_json.dumps(
    {name: globals()[name] for name in NAMES if name in globals()}, default=_fidelity_plain))
"""


def run_in_jupyter(notebook: Path, workdir: Path, kernels: Path) -> Execution:
    """Run the code cells not tagged ``skip`` top to bottom in one real kernel."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = read_any(notebook)
    names = metric_names(nb)
    spec_manager = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=spec_manager)
    client = NotebookClient(
        nb,
        km=km,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        allow_errors=False,
    )
    result = Execution(metrics={})
    metrics_cell = nbformat.v4.new_code_cell(_METRICS_CELL.replace("NAMES", repr(names)))
    with client.setup_kernel(cwd=str(workdir), env=kernel_env(), cleanup_kc=True):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or "skip" in tags_of(cell):
                continue
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as exc:
                result.error = f"cell {index + 1} raised in Jupyter:\n{exc}"
                return result
            result.printed[index + 1] = printed(cell.outputs)
        nb.cells.append(metrics_cell)
        client.execute_cell(metrics_cell, len(nb.cells) - 1)
    for line in printed(metrics_cell.outputs):
        if line.startswith("__FIDELITY_METRICS__"):
            result.metrics = json.loads(line.removeprefix("__FIDELITY_METRICS__"))
    return result


def kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    # One thread per process on both sides: the same float summation order in both (OpenMP
    # reductions, BLAS), and no oversubscription when steps run in parallel on 2 cores.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def cellpipe(args: list[str], cwd: Path) -> CliResult:
    """Run the cellpipe CLI in a subprocess (the code under PYTHONPATH), like a user would."""
    # A session of its own, so that a run which overstays is ended with every process it
    # started (fork server, step processes), not only the CLI.
    with subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=kernel_env(),
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n(fidelity harness: `cellpipe {' '.join(args)}` killed after {TIMEOUT_S} s)"
    return CliResult(proc.returncode, out, err)


def run_with_cellpipe(notebook: Path, workdir: Path) -> Execution:
    """``cellpipe run NB --json`` in ``workdir``; metrics and per-cell stdout of the run."""
    result = cellpipe(["run", notebook.name, "--json"], workdir)
    events = [json.loads(line) for line in result.out.splitlines() if line.strip().startswith("{")]
    summary = next((e for e in events if e.get("event") == "summary"), None)
    if result.code != 0 or summary is None:
        return Execution(
            metrics={},
            error=f"cellpipe run exited {result.code}\n{result.out[-4000:]}\n{result.err[-4000:]}",
        )
    execution = Execution(metrics=dict(summary.get("metrics") or {}))
    # Read as JSON: what is compared is the outputs, not the notebook's schema details.
    executed = json.loads(Path(summary["notebook"]).read_text(encoding="utf-8"))
    for cell in executed["cells"]:
        marks = cell.get("metadata", {}).get("cellpipe", {})
        if cell.get("cell_type") == "code" and "cell" in marks and "step" in marks:
            execution.printed.setdefault(int(marks["cell"]), []).extend(printed(cell["outputs"]))
    return execution


# -- comparison ----------------------------------------------------------------------------


@dataclass
class Comparison:
    """Both executions of one notebook and every difference between them."""

    notebook: Path
    jupyter: Execution
    pipeline: Execution
    differences: list[str]


def compare(notebook: Path, jupyter: Execution, pipeline: Execution) -> list[str]:
    """Every difference, as sentences naming the metric or cell and both values."""
    if jupyter.error is not None:
        return [f"the notebook itself fails in Jupyter (fix the test notebook): {jupyter.error}"]
    if pipeline.error is not None:
        return compare_failed(pipeline)
    differences: list[str] = []
    nb = read_any(notebook)
    names = metric_names(nb)
    if not names:
        differences.append("the notebook names no pipeline metrics: nothing to compare")
    for name in names:
        if name not in jupyter.metrics:
            differences.append(f"metric {name!r}: not defined when the notebook ends in Jupyter")
        elif name not in pipeline.metrics:
            differences.append(
                f"metric {name!r}: Jupyter {jupyter.metrics[name]!r}, pipeline did not record it"
            )
        elif not _equal(jupyter.metrics[name], pipeline.metrics[name]):
            differences.append(
                f"metric {name!r}: Jupyter {jupyter.metrics[name]!r}, "
                f"pipeline {pipeline.metrics[name]!r}"
            )
    for number in compared_cells(nb):
        ours = pipeline.printed.get(number)
        theirs = jupyter.printed.get(number, [])
        if ours is None:
            if theirs:
                differences.append(f"cell {number}: printed {theirs!r} in Jupyter; not run")
            continue
        if ours != theirs:
            differences.append(f"cell {number} printed: Jupyter {theirs!r}, pipeline {ours!r}")
    return differences


def _equal(a: Any, b: Any) -> bool:
    """Equal JSON values; ints and floats of the same value are equal (1 == 1.0), nothing else."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


@contextmanager
def two_copies(notebook: Path) -> Iterator[tuple[Path, Path]]:
    """Two fresh copies of the notebook's folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="cellpipe-fidelity-") as tmp:
        root = Path(tmp)
        yield (
            copy_folder(notebook.parent, root / "jupyter"),
            copy_folder(notebook.parent, root / "pipeline"),
        )


def run_both(notebook: Path, kernels: Path) -> Comparison:
    """Run ``notebook`` both ways in fresh copies of its folder and compare."""
    with two_copies(notebook) as (jupyter_dir, pipeline_dir):
        pipeline = run_with_cellpipe(pipeline_dir / notebook.name, pipeline_dir)
        if pipeline.error is not None:  # nothing to compare: spare the kernel start
            return Comparison(notebook, Execution(metrics={}), pipeline, compare_failed(pipeline))
        jupyter = run_in_jupyter(jupyter_dir / notebook.name, jupyter_dir, kernels)
    return Comparison(notebook, jupyter, pipeline, compare(notebook, jupyter, pipeline))


def compare_failed(pipeline: Execution) -> list[str]:
    return [f"the pipeline did not finish: {pipeline.error}"]


def check_problems(notebook: Path) -> tuple[int, dict[str, Any]]:
    """``cellpipe check NB --json`` in a copy of the folder: exit code and the JSON document."""
    with tempfile.TemporaryDirectory(prefix="cellpipe-fidelity-") as tmp:
        folder = copy_folder(notebook.parent, Path(tmp) / "check")
        result = cellpipe(["check", notebook.name, "--json"], folder)
    try:
        document = json.loads(result.out)
    except json.JSONDecodeError:
        document = {"unparsed": result.out, "stderr": result.err}
    return result.code, document


def problem_codes(document: dict[str, Any], kind: str) -> list[str]:
    """The ``code`` of every problem in ``document[kind]`` (kind: errors or warnings)."""
    return [str(p.get("code")) for p in document.get(kind, [])]
