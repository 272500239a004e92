"""`cellpipe models ...` on the examples, and `cellpipe.register_model` / `load_model`."""

from __future__ import annotations

import json

import pytest

import cellpipe
from cellpipe.api import run_notebook
from cellpipe.errors import ModelNotFoundError, StorageError

pytestmark = pytest.mark.e2e


def run_id_of(result) -> str:
    assert result.code == 0, result.err
    return json.loads(result.out.splitlines()[-1])["run_id"]


@pytest.mark.slow
def test_register_alias_show_and_history_on_the_wine_example(examples, run_cli):
    project = examples / "wine"
    run = run_id_of(run_cli("run", project / "wine.ipynb", "--json"))
    at = ("--project", project)
    first = run_cli("models", "register", "wine", "--run", run[:12], "--step", "train_forest",
                    "--var", "forest", "--alias", "staging", "--json", *at)  # fmt: skip
    assert first.code == 0, first.err
    doc = first.json()
    assert (doc["ref"], doc["aliases"]) == ("wine:1", ["staging"])
    assert (doc["run_id"], doc["step"], doc["variable"]) == (run, "train_forest", "forest")
    assert doc["parameters"]["MAX_DEPTH"] == 4
    assert set(doc["metrics"]) >= {"forest_acc", "logreg_acc"}
    assert doc["artifact"]["type"] == "sklearn.ensemble._forest.RandomForestClassifier"
    inputs = doc["signature"]["inputs"]
    assert len(inputs) == 13  # one tensor per column of the frame it was fitted on
    assert inputs[0] == {"name": "alcohol", "datatype": "FP64", "shape": [-1]}
    assert [o["name"] for o in doc["signature"]["outputs"]] == ["output-0", "predict_proba"]
    # What it needs (issue 13): the forest's own distributions and their requirements.
    assert {"scikit-learn", "numpy", "scipy", "joblib"} <= set(doc["packages"])
    assert (doc["tags"], doc["archived"], doc["input_example"]) == ({}, False, None)
    # The stored bytes are the step output's own: nothing was copied.
    show = run_cli("show", run, "--json", *at).json()
    forest = next(s for s in show["steps"] if s["step"] == "train_forest")
    assert doc["artifact"]["digest"] == forest["outputs"]["forest"]["digest"]

    second = run_cli("models", "register", "wine", "--run", run, "--step", "train_logreg",
                     "--var", "logreg", "--description", "logistic", *at)  # fmt: skip
    assert second.code == 0, second.err
    assert "registered wine:2 from run" in second.out

    moved = run_cli("models", "alias", "wine", "production", "1", "--json", *at)
    assert moved.json()["version"] == 1
    moved = run_cli("models", "alias", "wine", "production", "2", "--json", *at).json()
    assert (moved["version"], moved["previous"]) == (2, 1)
    removed = run_cli("models", "alias", "wine", "staging", "--delete", "--json", *at).json()
    assert (removed["version"], removed["previous"]) == (None, 1)

    listed = run_cli("models", "list", "--json", *at).json()
    assert listed["models"][0]["name"] == "wine"
    assert (listed["models"][0]["latest"], listed["models"][0]["versions"]) == (2, 2)
    assert listed["models"][0]["aliases"] == {"production": 2}
    text = run_cli("models", "list", *at)
    assert "production=2" in text.out

    prod = run_cli("models", "show", "wine@production", "--json", *at).json()
    assert (prod["ref"], prod["description"], prod["variable"]) == ("wine:2", "logistic", "logreg")
    assert [v["version"] for v in prod["versions"]] == [1, 2]
    assert run_cli("models", "show", "wine", "--json", *at).json()["version"] == 2
    assert run_cli("models", "show", "wine:1", "--json", *at).json()["aliases"] == []
    shown = run_cli("models", "show", "wine:1", *at)
    assert "from run " + run in shown.out
    assert "alcohol" in shown.out

    history = run_cli("models", "history", "wine", "--json", *at).json()
    assert history["aliases"] == {"production": 2}
    assert [(m["alias"], m["previous"], m["version"]) for m in history["moves"]] == [
        ("staging", None, 1),
        ("production", None, 1),
        ("production", 1, 2),
        ("staging", 1, None),
    ]
    assert "production" in run_cli("models", "history", "wine", *at).out

    # The registered object is the model: load it and predict.
    model = cellpipe.load_model("wine@production", project=project)
    assert type(model).__name__ == "Pipeline"
    assert cellpipe.load_model("wine:1", project=project).n_estimators == 100


@pytest.fixture
def diamond(examples, run_cli):
    project = examples / "diamond"
    return project, run_id_of(run_cli("run", project / "diamond.py", "--json"))


def test_errors_say_what_exists_and_how_to_fix_it(diamond, run_cli):
    project, run = diamond
    at = ("--project", project)
    assert run_cli("models", "list", "--json", *at).json() == {"models": []}
    missing = run_cli("models", "show", "numbers", *at)
    assert missing.code == 1
    assert "no model 'numbers' in the registry" in missing.err
    assert "register one first" in missing.err
    bad_var = run_cli("models", "register", "numbers", "--run", run, "--step", "a",
                      "--var", "nope", *at)  # fmt: skip
    assert bad_var.code == 1
    assert "has no output 'nope'" in bad_var.err
    assert "its outputs: numbers" in bad_var.err
    bad_step = run_cli("models", "register", "numbers", "--run", run, "--step", "zz",
                       "--var", "numbers", *at)  # fmt: skip
    assert "has no step 'zz'" in bad_step.err
    bad_name = run_cli("models", "register", "a/b", "--run", run, "--step", "a",
                       "--var", "numbers", *at)  # fmt: skip
    assert bad_name.code == 2  # a malformed name is a usage error (issue 13)
    assert "invalid model name 'a/b'" in bad_name.err
    ok = run_cli("models", "register", "numbers", "--run", run, "--step", "a",
                 "--var", "numbers", "--json", *at)  # fmt: skip
    assert ok.code == 0, ok.err
    assert ok.json()["signature"] is None  # a list is not a model: no signature, no error
    no_version = run_cli("models", "show", "numbers:7", *at)
    assert "model 'numbers' has no version 7; versions: 1" in no_version.err
    no_alias = run_cli("models", "show", "numbers@prod", *at)
    assert "no alias 'prod' on model 'numbers'; aliases: none" in no_alias.err
    assert "cellpipe models alias numbers prod VERSION" in no_alias.err
    both = run_cli("models", "alias", "numbers", "prod", "1", "--delete", *at)
    assert both.code == 1
    assert "give either a VERSION or --delete" in both.err
    reserved = run_cli("models", "alias", "numbers", "latest", "1", *at)
    assert "'latest' is reserved" in reserved.err
    zero = run_cli("models", "alias", "numbers", "prod", "0", *at)
    assert zero.code == 2
    assert "expected a version number from 1" in zero.err
    assert "no model 'nums'" in run_cli("models", "history", "nums", *at).err


def test_help_has_examples(run_cli):
    for words in (["models"], *[["models", c] for c in ("list", "show", "register", "alias",
                                                         "history")]):  # fmt: skip
        result = run_cli(*words, "--help")
        assert result.code == 0
        assert "examples:\n  cellpipe models" in result.out


def test_outside_a_project_is_an_error(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    result = run_cli("models", "list")
    assert result.code == 1
    assert "no cellpipe project" in result.err
    with pytest.raises(StorageError, match="no cellpipe project"):
        cellpipe.register_model({"w": 1}, "m")


SCRIPT = """\
# %% tags=["imports"]
import cellpipe

# %% tags=["pipeline-parameters"]
FACTOR = 3

# %% tags=["step:train"]
model = {"factor": FACTOR, "bias": 0.5}
cellpipe.log_metric("score", 0.75)
version = cellpipe.register_model(model, "scaler", description="from a step", alias="staging")
registered = version.ref

# %% tags=["step:report"]
print(registered)
"""


@pytest.mark.slow
def test_register_model_inside_a_step_records_lineage(tmp_path, monkeypatch):
    folder = tmp_path / "proj"
    folder.mkdir()
    notebook = folder / "scaler.py"
    notebook.write_text(SCRIPT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    report = run_notebook(notebook)
    assert report.run.status.value == "succeeded", report.run.error
    run_id = report.run.run_id
    assert cellpipe.load_model("scaler@staging", project=folder) == {"factor": 3, "bias": 0.5}
    assert cellpipe.load(run_id, "train", "registered", project=folder) == "scaler:1"

    from cellpipe.api import find_project, open_project
    from cellpipe.registry.registry import ModelRegistry

    def versions() -> list:
        with open_project(find_project(folder), create=False) as store:
            return ModelRegistry(store.metadata, store.artifacts).versions("scaler")

    [v1] = versions()
    assert (v1.run_id, v1.step, v1.variable) == (run_id, "train", "model")
    assert dict(v1.parameters) == {"FACTOR": 3}
    assert v1.metrics["score"] == 0.75
    assert (v1.description, v1.aliases) == ("from a step", ("staging",))

    # A cache hit does not run the step again: no new version.
    again = run_notebook(notebook)
    assert again.steps["train"].status.value == "cached"
    assert len(versions()) == 1
    # A changed parameter re-runs the step: version 2, and staging moves to it.
    changed = run_notebook(notebook, params={"FACTOR": 4})
    v2 = versions()[-1]
    assert (v2.version, v2.run_id, v2.parameters["FACTOR"]) == (2, changed.run.run_id, 4)
    assert cellpipe.load_model("scaler", project=folder) == {"factor": 4, "bias": 0.5}

    # Outside a run: no lineage, in the project of the working directory.
    monkeypatch.chdir(folder)
    v3 = cellpipe.register_model([1, 2, 3], "scaler")
    assert (v3.version, v3.run_id, v3.step, v3.variable) == (3, None, None, None)
    with pytest.raises(ModelNotFoundError, match="has no version 9; versions: 1, 2, 3"):
        cellpipe.load_model("scaler:9")


def test_register_and_load_model_are_exported_lazily():
    assert {"register_model", "load_model"} <= set(cellpipe.__all__)
    assert callable(cellpipe.register_model)
    assert callable(cellpipe.load_model)
