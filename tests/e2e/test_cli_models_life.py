"""Issue 13 through the CLI: version numbers (item 4), a version's life and what it needs (13).

`cellpipe models archive|unarchive|delete|tag|describe`, what `show` and `list` say about
archived versions, tags, packages and the input example, and the malformed version numbers
that used to be tracebacks. The item 4 regression runs the real console entry point in a
subprocess; the rest runs `cellpipe.cli.main` in process, like the other CLI tests.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import cellpipe
from cellpipe.api import run_notebook

pytestmark = pytest.mark.e2e

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.2], [0.9, 0.1], [0.1, 0.8], [0.3, 0.3]])
Y = np.array([0, 1, 0, 1, 0, 1])


@pytest.fixture
def registered(tmp_path: Path) -> Path:
    """A project with wine:1 (production), wine:2 and wine:3, scikit-learn models."""
    folder = tmp_path / "proj"
    (folder / ".cellpipe").mkdir(parents=True)
    model = LogisticRegression().fit(X, Y)
    cellpipe.register_model(
        model, "wine", input_example=X, alias="production", tags={"team": "ml"}, project=folder
    )
    cellpipe.register_model(model, "wine", description="second", project=folder)
    cellpipe.register_model(model, "wine", description="third", project=folder)
    return folder


def test_item4_models_show_with_a_non_ascii_version_is_a_usage_error(registered: Path) -> None:
    for version in ("\u00b2", "\u0661", "\uff11", "1" * 23):
        done = subprocess.run(
            [sys.executable, "-m", "cellpipe", "models", "show", f"wine:{version}",
             "--project", str(registered)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "the version must be a number from 1" in done.stderr
        assert "Traceback" not in done.stderr
        assert "OverflowError" not in done.stderr
        assert done.stdout == ""


def test_item4_version_arguments_are_ascii_digits_in_range(registered: Path, run_cli) -> None:
    at = ("--project", registered)
    for version in ("\u00b2", "\uff12", str(2**63)):
        moved = run_cli("models", "alias", "wine", "staging", version, *at)
        assert moved.code == 2
        assert "expected a version number from 1 to 9223372036854775807" in moved.err
        for verb in ("archive", "delete", "tag", "describe"):
            extra = {"tag": ["a=b"], "describe": ["text"], "delete": ["--yes"]}.get(verb, [])
            done = run_cli("models", verb, f"wine:{version}", *extra, *at)
            assert done.code == 2, (verb, done.err)
            assert "the version must be a number from 1" in done.err
    huge = run_cli("models", "show", f"wine:{2**63 - 1}", *at)
    assert huge.code == 1  # in range, just not registered: no overflow on the way
    assert "model 'wine' has no version 9223372036854775807" in huge.err


def test_item13_archive_skips_a_version_and_keeps_it_readable(registered: Path, run_cli) -> None:
    at = ("--project", registered)
    refused = run_cli("models", "archive", "wine:1", *at)
    assert refused.code == 1
    assert "cannot archive wine:1: the alias production points at it" in refused.err
    assert "cellpipe models alias wine production VERSION" in refused.err
    whole = run_cli("models", "archive", "wine", *at)
    assert whole.code == 2
    assert "archive needs one version named by its number, not 'wine'" in whole.err

    done = run_cli("models", "archive", "wine:3", "--json", *at).json()
    assert (done["ref"], done["archived"], done["changed"]) == ("wine:3", True, True)
    assert "already archived: no change" in run_cli("models", "archive", "wine:3", *at).out
    assert run_cli("models", "show", "wine", "--json", *at).json()["version"] == 2
    assert run_cli("models", "show", "wine@latest", "--json", *at).json()["version"] == 2
    shown = run_cli("models", "show", "wine:3", *at)
    assert shown.code == 0
    assert "model wine:3 [archived]" in shown.out
    [listed] = run_cli("models", "list", "--json", *at).json()["models"]
    assert (listed["latest"], listed["versions"], listed["archived"]) == (2, 2, 1)
    assert "2 (+1 archived)" in run_cli("models", "list", *at).out
    alias = run_cli("models", "alias", "wine", "staging", "3", *at)
    assert alias.code == 1
    assert "cannot point wine@staging at version 3: it is archived" in alias.err
    assert "cellpipe models unarchive wine:3" in alias.err

    back = run_cli("models", "unarchive", "wine:3", "--json", *at).json()
    assert (back["archived"], back["changed"]) == (False, True)
    assert run_cli("models", "show", "wine", "--json", *at).json()["version"] == 3
    assert cellpipe.load_model("wine:3", project=registered).predict(X[:1]).shape == (1,)


def test_item13_delete_needs_yes_refuses_aliases_and_never_reuses_numbers(
    registered: Path, run_cli
) -> None:
    at = ("--project", registered)
    unasked = run_cli("models", "delete", "wine:3", *at)  # no terminal under pytest
    assert unasked.code == 1
    assert "deleting wine:3 needs --yes when there is no terminal to ask" in unasked.err
    aliased = run_cli("models", "delete", "wine:1", "--yes", *at)
    assert aliased.code == 1
    assert "cannot delete wine:1: the alias production points at it" in aliased.err
    digest = run_cli("models", "show", "wine:3", "--json", *at).json()["artifact"]["digest"]

    deleted = run_cli("models", "delete", "wine:3", "--yes", "--json", *at).json()
    assert (deleted["ref"], deleted["deleted"]) == ("wine:3", True)
    gone = run_cli("models", "show", "wine:3", *at)
    assert gone.code == 1
    assert "model 'wine' has no version 3 (it was deleted" in gone.err
    assert "versions: 1, 2" in gone.err
    again = run_cli("models", "delete", "wine:3", "--yes", *at)
    assert "(it was deleted" in again.err
    assert cellpipe.api.artifact_file(digest, project=registered).is_file()  # the bytes stay

    v4 = cellpipe.register_model({"n": 4}, "wine", project=registered)
    assert v4.version == 4  # 3 is never given again
    history = run_cli("models", "history", "wine", "--json", *at).json()
    assert history["moves"][0]["version"] == 1


def test_item13_tags_and_descriptions(registered: Path, run_cli) -> None:
    at = ("--project", registered)
    tagged = run_cli("models", "tag", "wine@production", "stage=prod", "data.version=v3",
                     "--json", *at).json()  # fmt: skip
    assert (tagged["ref"], tagged["tags"]) == (
        "wine:1", {"data.version": "v3", "stage": "prod", "team": "ml"},
    )  # fmt: skip
    removed = run_cli("models", "tag", "wine:1", "--remove", "team", *at)
    assert removed.code == 0
    assert "wine:1 tags: data.version=v3, stage=prod" in removed.out
    missing = run_cli("models", "tag", "wine:1", "--remove", "team", *at)
    assert missing.code == 1
    assert "wine:1 has no tag 'team'; tags: data.version, stage" in missing.err
    bad = run_cli("models", "tag", "wine:1", "bad key=1", *at)
    assert bad.code == 2
    assert "invalid tag key 'bad key'" in bad.err
    assert run_cli("models", "tag", "wine:1", "novalue", *at).code == 2  # argparse: KEY=VALUE
    assert run_cli("models", "tag", "wine:1", *at).code == 1
    twice = run_cli("models", "tag", "wine:1", "a=1", "a=2", *at)
    assert "tag 'a' is given twice" in twice.err

    described = run_cli("models", "describe", "wine:2", "forest, 200 trees", "--json", *at)
    assert described.json()["description"] == "forest, 200 trees"
    model = run_cli("models", "describe", "wine", "wine cultivars", "--model", *at)
    assert model.code == 0
    assert "described model wine: wine cultivars" in model.out
    [listed] = run_cli("models", "list", "--json", *at).json()["models"]
    assert listed["description"] == "wine cultivars"
    wrong = run_cli("models", "describe", "wine:2", "x", "--model", *at)
    assert wrong.code == 2
    assert "a model's description is set by its name" in wrong.err
    shown = run_cli("models", "show", "wine:1", *at).out
    assert "stage" in shown
    assert "prod" in shown


def test_item13_show_has_packages_and_the_input_example(registered: Path, run_cli) -> None:
    at = ("--project", registered)
    shown = run_cli("models", "show", "wine:1", "--json", *at).json()
    packages = shown["packages"]
    for distribution in ("scikit-learn", "numpy", "scipy", "joblib"):
        assert packages[distribution] == importlib.metadata.version(distribution)
    assert shown["input_example"] == [
        {"name": "input-0", "datatype": "FP64", "shape": [5, 2], "data": X[:5].ravel().tolist()}
    ]
    assert run_cli("models", "show", "wine:2", "--json", *at).json()["input_example"] is None
    text = run_cli("models", "show", "wine:1", *at).out
    assert "Packages" in text
    assert "scikit-learn" in text
    assert "Input example" in text
    assert "[5, 2]" in text


def test_help_of_the_new_verbs_has_examples(run_cli) -> None:
    for verb in ("archive", "unarchive", "delete", "tag", "describe"):
        result = run_cli("models", verb, "--help")
        assert result.code == 0
        assert "examples:\n  cellpipe models " + verb in result.out


STEP_SCRIPT = """\
# %% tags=["imports"]
import cellpipe
import numpy as np

# %% tags=["step:train"]
class Doubler:
    def predict(self, x):
        return np.asarray(x) * 2

model = Doubler()
version = cellpipe.register_model(model, "doubler")
registered = version.ref
"""


@pytest.mark.slow
def test_item13_a_notebook_class_registered_in_a_step_records_the_run_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    notebook = folder / "doubler.py"
    notebook.write_text(STEP_SCRIPT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    report = run_notebook(notebook)
    assert report.run.status.value == "succeeded", report.run.error
    from cellpipe.api import find_project, open_project
    from cellpipe.registry.registry import ModelRegistry

    with open_project(find_project(folder), create=False) as store:
        [version] = ModelRegistry(store.metadata, store.artifacts).versions("doubler")
    # The class is the notebook's own (cloudpickled): the run's imports say what it needs.
    assert version.run_id == report.run.run_id
    assert version.packages["numpy"] == importlib.metadata.version("numpy")
    assert version.packages["cloudpickle"] == importlib.metadata.version("cloudpickle")
    assert "scikit-learn" not in version.packages

    # Registered later from the recorded run: the step run's recorded imports say the same.
    again = run_cli("models", "register", "doubler", "--run", report.run.run_id, "--step",
                    "train", "--var", "model", "--json", "--project", folder)  # fmt: skip
    assert again.code == 0, again.err
    assert again.json()["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert "scikit-learn" not in again.json()["packages"]
