"""cellpipe from inside a real kernel (nbclient + ipykernel): magics, restore, load, completion.

Every cell runs in one ipykernel started in a copy of the diamond example (standard library
only); the kernel imports the cellpipe under test through the inherited ``PYTHONPATH``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_helpers import Kernel, errors_of, kernel, text_of, write_kernel_spec

from cellpipe.cli.ipython import NotebookNotFoundError, default_notebook, with_default_notebook

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kernel_spec(tmp_path_factory.mktemp("jupyter"))


@pytest.fixture
def diamond(repo_root: Path, tmp_path: Path) -> Path:
    """A folder holding only the diamond notebook (.ipynb)."""
    folder = tmp_path / "diamond"
    folder.mkdir()
    shutil.copy(repo_root / "examples" / "diamond" / "diamond.ipynb", folder)
    return folder


@pytest.fixture
def live(diamond: Path, kernels: Path) -> Iterator[Kernel]:
    with kernel(diamond, kernels) as k:
        yield k


def test_magics_run_runs_why_help_and_errors_without_traceback(live: Kernel) -> None:
    assert errors_of(live.run("%load_ext cellpipe")) == []

    ran = live.run("%cellpipe run -p N=50")  # no notebook named: the only one in the folder
    assert errors_of(ran) == []
    out = text_of(ran, "stdout")
    assert "succeeded (4 succeeded)" in out
    assert "[d] {'label': 'diamond'" in out  # a step's print reached the cell
    run_id = out.split("run ", 1)[1].split(":", 1)[0]

    runs = live.run("%cellpipe runs")
    assert errors_of(runs) == []
    assert run_id in text_of(runs, "stdout")

    why = live.run("%cellpipe why latest d")
    assert errors_of(why) == []
    assert f"d in run {run_id}: succeeded" in text_of(why, "stdout")

    mistake = live.run("%cellpipe why latest nope")
    assert errors_of(mistake) == []  # shown, not raised
    err = text_of(mistake, "stderr")
    assert "has no step 'nope'" in err
    assert "hint: its steps: a, b, c, d" in err
    assert "Traceback" not in text_of(mistake)

    helped = live.run("%cellpipe --help")
    assert errors_of(helped) == []
    assert "usage: cellpipe" in text_of(helped, "stdout")

    usage = live.run("%cellpipe runs --no-such-option")
    assert errors_of(usage) == []
    assert "unrecognized arguments" in text_of(usage, "stderr")

    # The kernel is still alive and cellpipe still usable after all of that.
    assert text_of(live.run("print(1 + 1)"), "stdout") == "2\n"


def test_restore_load_and_completion_in_a_kernel(live: Kernel) -> None:
    assert errors_of(live.run("%load_ext cellpipe\n%cellpipe run")) == []

    restored = live.run(
        "import cellpipe\nvalues = cellpipe.restore('latest', 'd')\nprint(sorted(values))"
    )
    assert errors_of(restored) == []
    assert "'mean', 'rms', 'spread'" in text_of(restored, "stdout")
    # The step's cell now runs in the kernel as it ran in the pipeline.
    step = live.run(
        'summary = {"label": LABEL, "mean": round(mean, 4), "spread": round(spread, 4),'
        ' "rms": round(rms, 4)}\nprint(summary)'
    )
    assert errors_of(step) == []
    assert "'label': 'diamond'" in text_of(step, "stdout")

    # `summary` is bound only by the last step: nothing downstream reads it.
    loaded = live.run("print(cellpipe.load('latest', 'd', 'summary') == summary)")
    assert errors_of(loaded) == []
    assert text_of(loaded, "stdout") == "True\n"

    listed = live.run("print(all(n in dir(cellpipe) for n in ('run', 'load', 'restore')))")
    assert text_of(listed, "stdout") == "True\n"


def test_default_notebook_follows_what_the_kernel_says(tmp_path: Path) -> None:
    for name in ("a.ipynb", "b.ipynb"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(NotebookNotFoundError, match="has 2 notebooks") as caught:
        default_notebook(user_ns={}, env={}, cwd=tmp_path)
    assert "%cellpipe run NOTEBOOK" in str(caught.value.hint)
    assert default_notebook(user_ns={"__session__": "sub/b.ipynb"}, env={}, cwd=tmp_path) == (
        tmp_path / "b.ipynb"
    )
    vscode = {"__vsc_ipynb_file__": str(tmp_path / "a.ipynb"), "__session__": "b.ipynb"}
    assert default_notebook(user_ns=vscode, env={}, cwd=tmp_path) == tmp_path / "a.ipynb"
    env = {"JPY_SESSION_NAME": str(tmp_path / "b.ipynb")}
    assert default_notebook(user_ns={}, env=env, cwd=tmp_path) == tmp_path / "b.ipynb"

    ns = {"__session__": "a.ipynb"}
    a = str(tmp_path / "a.ipynb")
    words = with_default_notebook(["run", "-p", "N=1", "--jobs", "2"], user_ns=ns, cwd=tmp_path)
    assert words == ["run", a, "-p", "N=1", "--jobs", "2"]
    assert with_default_notebook(["run", "x.ipynb", "-p", "N=1"], user_ns=ns, cwd=tmp_path) == [
        "run",
        "x.ipynb",
        "-p",
        "N=1",
    ]
    assert with_default_notebook(["runs"], user_ns=ns, cwd=tmp_path) == ["runs"]
    assert with_default_notebook(["why", "latest", "d"], user_ns=ns, cwd=tmp_path) == [
        "why",
        "latest",
        "d",
    ]
    assert with_default_notebook(["check", "--json"], user_ns=ns, cwd=tmp_path) == [
        "check",
        a,
        "--json",
    ]


def test_the_kernels_notebook_folder_is_the_default_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELLPIPE_PROJECT", raising=False)
    folder = tmp_path / "nb"
    folder.mkdir()
    (folder / "a.ipynb").write_text("{}")
    elsewhere = tmp_path / "root"
    elsewhere.mkdir()
    ns = {"__vsc_ipynb_file__": str(folder / "a.ipynb")}  # VS Code: cwd may be elsewhere
    project = ["--project", str(folder.resolve())]
    assert with_default_notebook(["runs"], user_ns=ns, cwd=elsewhere) == ["runs", *project]
    assert with_default_notebook(["models", "list"], user_ns=ns, cwd=elsewhere) == [
        "models",
        "list",
        *project,
    ]
    assert with_default_notebook(["why", "latest", "d"], user_ns=ns, cwd=elsewhere) == [
        "why",
        *project,
        "latest",
        "d",
    ]
    # An explicit --project, CELLPIPE_PROJECT, or the notebook in the working directory win.
    assert with_default_notebook(["runs", "--project", "x"], user_ns=ns, cwd=elsewhere) == [
        "runs",
        "--project",
        "x",
    ]
    env = {"CELLPIPE_PROJECT": str(elsewhere)}
    assert with_default_notebook(["runs"], user_ns=ns, env=env, cwd=elsewhere) == ["runs"]
    assert with_default_notebook(["runs"], user_ns=ns, cwd=folder) == ["runs"]
    # No notebook found: the working directory, no error.
    assert with_default_notebook(["runs"], user_ns={}, cwd=elsewhere) == ["runs"]
