"""`cellpipe report RUN`: one self-contained HTML page of a run (nbconvert)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from run_helpers import write_notebook

if TYPE_CHECKING:
    from conftest import RunCli  # the e2e conftest (not importable by name in a full run)

pytestmark = pytest.mark.e2e

CELLS = [
    (["markdown"], "# Plot report\n\nThe prose *between* the steps survives."),
    (["imports"], "import matplotlib.pyplot as plt"),
    (["pipeline-parameters"], "POINTS = 5\nLABEL = '<b>not bold</b>'"),
    (["step:make"], "values = [i * i for i in range(POINTS)]"),
    (["markdown"], "## Drawing\n\nA figure of the squares."),
    (["step:draw"], "fig, ax = plt.subplots()\nax.plot(values)\nplt.show()\ntotal = sum(values)"),
    (["pipeline-metrics"], "total"),
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytest.importorskip("matplotlib")
    folder = tmp_path / "proj"
    path = write_notebook(folder, CELLS, name="plots.ipynb")
    monkeypatch.chdir(folder)
    return path


def test_report_is_one_self_contained_page(project: Path, run_cli: RunCli) -> None:
    ran = run_cli("run", project)
    assert ran.code == 0, ran.err
    result = run_cli("report", "latest", "--json")
    assert result.code == 0, result.err
    path = Path(result.json()["path"])
    run_id = path.stem
    assert path == (project.parent / f"{run_id}.html").resolve()
    page = path.read_text(encoding="utf-8")

    assert f"run <code>{run_id}</code>" in page
    assert "<svg" in page  # the graph
    assert ">make</text>" in page
    assert ">draw</text>" in page
    assert "POINTS" in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page  # parameter values are escaped
    assert "<b>not bold</b>" not in page.split("<h2>Outputs</h2>")[0]
    assert "total" in page
    assert "<td>30</td>" in page  # the metric's value
    assert "The prose <em>between</em> the steps survives." in page
    assert "A figure of the squares." in page
    assert "data:image/png;base64," in page
    # Nothing is fetched when the page is opened.
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert not re.search(r"import\(\s*[\"']https?://", page)


def test_report_output_option_and_text_output(project: Path, run_cli: RunCli) -> None:
    assert run_cli("run", project).code == 0
    result = run_cli("report", "latest", "-o", "out/run.html")
    assert result.code == 0, result.err
    target = (project.parent / "out" / "run.html").resolve()
    assert result.out.strip() == str(target)
    assert target.is_file()
    assert "nbconvert" in result.err  # progress, on stderr


def test_report_without_nbconvert_names_the_extra(
    project: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_cli("run", project).code == 0
    monkeypatch.setitem(sys.modules, "nbconvert", None)
    result = run_cli("report", "latest")
    assert result.code == 1
    assert "pip install 'cellpipe[report]'" in result.err
    assert "Traceback" not in result.err


def test_report_of_an_unknown_run(project: Path, run_cli: RunCli) -> None:
    assert run_cli("run", project).code == 0
    result = run_cli("report", "no-such-run", "--json")
    assert result.code != 0
    assert result.out == "" or "error" in json.loads(result.out)


def test_executed_notebook_keeps_markdown_between_the_steps(project: Path, run_cli: RunCli) -> None:
    ran = run_cli("run", project, "--json")
    assert ran.code == 0, ran.err
    run_id = json.loads(ran.out.splitlines()[-1])["run_id"]
    run_nb = project.parent / ".cellpipe" / "runs" / run_id / "run.ipynb"
    cells = json.loads(run_nb.read_text(encoding="utf-8"))["cells"]
    order = [
        "".join(c["source"]).splitlines()[0]
        for c in cells
        if c["cell_type"] == "markdown" or "cellpipe" in c["metadata"]
    ]
    assert order.index("# Plot report") < order.index("import matplotlib.pyplot as plt")
    assert order.index("## step `make`: succeeded") < order.index("## Drawing")
    assert order.index("## Drawing") < order.index("## step `draw`: succeeded")
    drawing = next(c for c in cells if "".join(c["source"]).startswith("## Drawing"))
    assert drawing["metadata"]["cellpipe"] == {"cell": 5, "role": "markdown"}


def test_percent_script_markdown_is_uncommented(tmp_path: Path, run_cli: RunCli) -> None:
    script = tmp_path / "pct.py"
    script.write_text(
        '"""Top docstring text."""\n\n'
        '# %% tags=["step:a"]\nx = 1\n\n'
        "# %% [markdown]\n# ## Between\n#\n# More *text*.\n\n"
        '# %% tags=["step:b"]\ny = x + 1\n'
    )
    ran = run_cli("run", script, "--json")
    assert ran.code == 0, ran.err
    run_id = json.loads(ran.out.splitlines()[-1])["run_id"]
    run_nb = tmp_path / ".cellpipe" / "runs" / run_id / "run.ipynb"
    texts = [
        "".join(c["source"])
        for c in json.loads(run_nb.read_text())["cells"]
        if c["metadata"].get("cellpipe", {}).get("role") == "markdown"
    ]
    assert texts == ["Top docstring text.", "## Between\n\nMore *text*."]
