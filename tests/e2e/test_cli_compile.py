"""`cellpipe compile`, `image` and `submit` end to end, and the compiled YAML run by kfp.local.

There is no Kubeflow cluster in these tests: the YAML is validated strictly, run under kfp's
own local runner (SubprocessRunner, in this virtualenv, nothing installed: compiled with
--image), and its metrics are compared with those of `cellpipe run`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellpipe.kfp.validate import validate_documents
from cellpipe.kfp.yaml import load_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.kfp]

BAD = '# %% tags=["step:a"]\n!ls\nx = 1\n'


def test_compile_writes_valid_deterministic_yaml(run_cli, examples):
    notebook = examples / "wine" / "wine.ipynb"
    result = run_cli("compile", notebook, "-o", "one.yaml", "--json")
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["pipeline"] == "wine"
    assert summary["steps"] == 5
    assert run_cli("compile", notebook, "-o", "two.yaml").code == 0
    first = Path("one.yaml").read_text()
    assert first == Path("two.yaml").read_text()
    assert validate_documents(load_yaml(first)) == []


def test_compile_default_output_and_stdout(run_cli, examples):
    notebook = examples / "diamond" / "diamond.ipynb"
    assert run_cli("compile", notebook).code == 0
    written = notebook.with_suffix(".yaml").read_text()
    result = run_cli("compile", notebook, "-o", "-")
    assert result.code == 0
    assert result.out == written


def test_compile_name_and_parameter_overrides(run_cli, examples):
    notebook = examples / "diamond" / "diamond.ipynb"
    result = run_cli("compile", notebook, "-o", "-", "--name", "My Diamond", "-p", "N=50")
    assert result.code == 0, result.err
    spec = load_yaml(result.out)[0]
    assert spec["pipelineInfo"]["name"] == "my-diamond"
    assert spec["root"]["inputDefinitions"]["parameters"]["N"]["defaultValue"] == 50


def test_compile_bad_parameter_exits_2(run_cli, examples):
    result = run_cli("compile", examples / "diamond" / "diamond.ipynb", "-p", "NN=3")
    assert result.code == 2
    assert "did you mean 'N'" in result.err


def test_compile_unsupported_construct_exits_1(run_cli, tmp_path):
    notebook = tmp_path / "bad.py"
    notebook.write_text(BAD)
    result = run_cli("compile", notebook)
    assert result.code == 1
    assert "step 'a'" in result.err
    assert "'!ls'" in result.err
    assert not notebook.with_suffix(".yaml").exists()


def test_image_context_and_compile_from_it(run_cli, examples, monkeypatch, tmp_path):
    notebook = examples / "wine" / "wine.ipynb"
    result = run_cli("image", notebook, "-o", "ctx", "--json")
    assert result.code == 0, result.err
    tag = result.json()["tag"]
    assert Path("ctx/Dockerfile").is_file()
    assert "scikit-learn==" in Path("ctx/requirements.txt").read_text()
    compiled = run_cli("compile", notebook, "-o", "-", "--image-from-context")
    spec = load_yaml(compiled.out)[0]
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {tag}
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    built = run_cli("image", notebook, "-o", "ctx", "--build")
    assert built.code == 1
    assert "none of docker, podman or buildah is installed" in built.err


def test_submit_unreachable_host_is_a_clean_error(run_cli, examples, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr("time.sleep", lambda _s: None)
    notebook = examples / "diamond" / "diamond.ipynb"
    result = run_cli("submit", notebook, "--host", "http://127.0.0.1:9", "--upload-only")
    assert result.code == 1
    assert "refused or did not answer" in result.err
    assert "Traceback" not in result.err


def _kfp_metrics(root: Path) -> dict[str, object]:
    metrics: dict[str, object] = {}
    for output in sorted(root.rglob("executor_output.json")):
        artifacts = json.loads(output.read_text()).get("artifacts", {})
        for artifact in artifacts.get("metrics", {}).get("artifacts", []):
            metrics.update(artifact["metadata"])
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("example", ["diamond/diamond.ipynb", "wine/wine.ipynb"])
def test_compiled_yaml_runs_under_kfp_local_with_run_metrics(run_cli, examples, example, tmp_path):
    from kfp import components, local

    from cellpipe.api import run

    notebook = examples / example
    package = tmp_path / "pipeline.yaml"
    # --image: nothing is pip-installed (no network); this virtualenv has every package.
    result = run_cli("compile", notebook, "-o", package, "--image", "python:3.11")
    assert result.code == 0, result.err
    root = tmp_path / "kfp-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    components.load_component_from_file(str(package))()
    expected = run(notebook).metrics
    assert expected
    assert _kfp_metrics(root) == expected
    reports = sorted(p.parent.name for p in root.rglob("report"))
    assert reports  # every step wrote its HTML report


RUN_PACKAGES = """\
# %% tags=["imports"]
import helper

# %% tags=["step:load"]
rows = helper.rows()

# %% tags=["step:count"]
total = len(rows)
"""


def test_compile_also_pins_what_the_last_local_run_imported(run_cli, tmp_path):
    """A step's indirect imports only show at run time: the run records them, compile pins."""
    import yaml

    from cellpipe.notebook.packages import distribution_of

    (tmp_path / "helper.py").write_text("def rows():\n    import yaml\n    return [1, 2, 3]\n")
    notebook = tmp_path / "nb.py"
    notebook.write_text(RUN_PACKAGES)
    pin = "{}=={}".format(*(distribution_of("yaml") or ("?", "?")))
    assert pin == f"PyYAML=={yaml.__version__}"

    before = run_cli("compile", notebook, "-o", tmp_path / "before.yaml", "--json")
    assert before.code == 0, before.err
    assert before.json()["run_packages"] == {}
    assert pin not in (tmp_path / "before.yaml").read_text()

    assert run_cli("run", notebook).code == 0
    after = run_cli("compile", notebook, "-o", tmp_path / "after.yaml", "--json")
    assert after.code == 0, after.err
    assert after.json()["run_packages"] == {"load": [pin]}  # helper is local: not pinned
    text = (tmp_path / "after.yaml").read_text()
    # in the load step's install command, and in its reader's, which inherits it (issue 9)
    assert text.count(pin) == 2
    assert validate_documents(load_yaml(text)) == []
    human = run_cli("compile", notebook, "-o", tmp_path / "again.yaml")
    assert f"also pinned 1 package the steps' last local run imported indirectly: {pin}" in (
        human.out
    )

    off = run_cli("compile", notebook, "-o", tmp_path / "off.yaml", "--no-run-packages", "--json")
    assert off.json()["run_packages"] == {}
    assert (tmp_path / "off.yaml").read_text() == (tmp_path / "before.yaml").read_text()


SEEDED = """\
# %% tags=["imports"]
import random

import numpy as np

np.random.seed(42)
random.seed(7)

# %% tags=["step:a"]
import json
a = float(np.random.rand()) + random.random()

# %% tags=["step:b"]
b = float(np.random.rand()) + random.random()

# %% tags=["step:c"]
c = float(np.random.rand()) + random.random()
total = json.loads(json.dumps(a + b + c))

# %% tags=["pipeline-metrics"]
total
"""


@pytest.mark.slow
def test_a_seeded_random_stream_and_a_reimport_run_under_kfp_local_as_in_one_process(
    run_cli, tmp_path
):
    """Issue 9: the random state flows from pod to pod; a module a step imported is imported
    again where it is used, never passed as data."""
    import random

    import numpy as np
    from kfp import components, local

    np.random.seed(42)
    random.seed(7)
    values = [float(np.random.rand()) + random.random() for _ in range(3)]
    expected = sum(values)

    notebook = tmp_path / "seeded.py"
    notebook.write_text(SEEDED)
    package = tmp_path / "pipeline.yaml"
    result = run_cli("compile", notebook, "-o", package, "--image", "python:3.11")
    assert result.code == 0, result.err
    root = tmp_path / "kfp-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    components.load_component_from_file(str(package))()
    assert _kfp_metrics(root) == {"total": expected}


def test_compile_warns_that_a_file_edge_needs_a_shared_volume(run_cli, tmp_path):
    notebook = tmp_path / "files.py"
    notebook.write_text(
        '# %% tags=["step:write"]\nopen("data.txt", "w").write("7")\n\n'
        '# %% tags=["step:read"]\nvalue = int(open("data.txt").read())\n'
    )
    result = run_cli("compile", notebook, "-o", tmp_path / "files.yaml", "--json")
    assert result.code == 0, result.err
    (warning,) = result.json()["warnings"]
    assert warning.startswith("step 'read' reads 'data.txt' (cell 2, line 1), which step 'write'")
    assert "shared volume" in warning
    assert "warning: step 'read' reads 'data.txt'" in result.err


@pytest.mark.slow
def test_a_notebook_name_with_triple_quotes_runs_no_code_under_kfp_local(
    run_cli, tmp_path, monkeypatch
):
    """Issue 10, item 2: the file name was pasted into each component's docstring; a name
    with \"\"\" ran the rest of the name as code in every pod."""
    import uuid

    from kfp import components, local

    pwned = Path("/tmp") / f"pwned-{uuid.uuid4().hex}"
    monkeypatch.setenv("CELLPIPE_PWNED", str(pwned))
    notebook = tmp_path / 'x"""; open(__import__("os").environ["CELLPIPE_PWNED"], "w") #.py'
    notebook.write_text(
        '# %% tags=["step:a"]\ntotal = 1 + 1\n\n# %% tags=["pipeline-metrics"]\ntotal\n'
    )
    package = tmp_path / "pipeline.yaml"
    try:
        result = run_cli("compile", notebook, "-o", package, "--image", "python:3.11")
        assert result.code == 0, result.err
        root = tmp_path / "kfp-root"
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
        components.load_component_from_file(str(package))()
        assert _kfp_metrics(root) == {"total": 2}
        assert not pwned.exists()
    finally:
        pwned.unlink(missing_ok=True)


@pytest.mark.parametrize("value", ["NaN", "-Infinity", "1e999", "[" * 3000 + "]" * 3000])
def test_submit_refuses_non_finite_or_too_deep_arguments_of_a_compiled_yaml(
    run_cli, examples, tmp_path, value
):
    """Issue 10, item 8: -p values of a compiled .yaml are untyped JSON; NaN went to the API."""
    package = tmp_path / "diamond.yaml"
    assert run_cli("compile", examples / "diamond" / "diamond.ipynb", "-o", package).code == 0
    result = run_cli("submit", package, "-p", f"N={value}", "--host", "http://127.0.0.1:9")
    assert result.code == 2, result.err
    assert "parameter N: " in result.err
    assert "this is a bug" not in result.err


@pytest.mark.slow
def test_a_nan_metric_does_not_fail_the_task_under_kfp_local(run_cli, tmp_path):
    """Issue 10, item 8: KFP's protobuf Value refuses NaN, so the whole task failed."""
    from kfp import components, local

    notebook = tmp_path / "nan.py"
    notebook.write_text(
        '# %% tags=["step:a"]\nloss = float("nan")\nok = 1.5\n\n'
        '# %% tags=["pipeline-metrics"]\nloss\nok\n'
    )
    package = tmp_path / "pipeline.yaml"
    assert run_cli("compile", notebook, "-o", package, "--image", "python:3.11").code == 0
    root = tmp_path / "kfp-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    components.load_component_from_file(str(package))()
    assert _kfp_metrics(root) == {"ok": 1.5}
    (written,) = [p for p in root.rglob("metrics") if p.is_file()]
    assert json.loads(written.read_text()) == {"loss": None, "ok": 1.5}
