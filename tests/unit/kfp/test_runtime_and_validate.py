from __future__ import annotations

import copy

import numpy as np
import pytest

from cellpipe.kfp import compile_documents
from cellpipe.kfp.runtime import _cp_cellpipe_shim, _cp_coerce, _cp_load, _cp_save
from cellpipe.kfp.validate import validate_documents
from cellpipe.kfp.yaml import dump_yaml, load_yaml

pytestmark = pytest.mark.kfp

OPTIONS = {"image": "python:3.11", "cellpipe_version": "0.0.0", "kfp_version": "2.17.3"}
NOTEBOOK = """
# %% tags=["step:a"]
x = 1
# %% tags=["step:b"]
y = x + 1
"""


@pytest.mark.parametrize(
    ("value", "fmt"),
    [({"a": [1, 2.5, None]}, "json"), (np.arange(6.0).reshape(2, 3), "npy"), ({1, 2}, "pickle")],
    ids=["json", "npy", "pickle"],
)
def test_runtime_formats_round_trip(tmp_path, value, fmt):
    path = str(tmp_path / "out" / "value")
    assert _cp_save(value, path) == fmt
    loaded = _cp_load(path)
    if fmt == "npy":
        assert np.array_equal(loaded, value)
    else:
        assert loaded == value


def test_runtime_coerces_protobuf_numbers():
    assert _cp_coerce(3.0, "int") == 3
    assert isinstance(_cp_coerce(3.0, "int"), int)
    assert isinstance(_cp_coerce(2, "float"), float)
    assert _cp_coerce("[1, 2]", "list") == [1, 2]


def test_yaml_round_trips(make_pipeline):
    documents = compile_documents(make_pipeline(NOTEBOOK), **OPTIONS)
    assert load_yaml(dump_yaml(documents)) == documents


def _broken(make_pipeline, edit):
    documents = compile_documents(make_pipeline(NOTEBOOK), **OPTIONS)
    broken = copy.deepcopy(documents)
    edit(broken[0])
    return validate_documents(broken)


def test_unknown_field_fails_strict_parse(make_pipeline):
    problems = _broken(make_pipeline, lambda d: d["pipelineInfo"].update(colour="red"))
    assert any("colour" in p for p in problems)


def test_unknown_executor_field_fails(make_pipeline):
    problems = _broken(
        make_pipeline,
        lambda d: d["deploymentSpec"]["executors"]["exec-a"]["container"].update(cmd=["x"]),
    )
    assert any("executor exec-a" in p and "cmd" in p for p in problems)


def test_missing_producer_output_is_reported(make_pipeline):
    def edit(doc):
        del doc["components"]["comp-a"]["outputDefinitions"]["artifacts"]["x"]

    problems = _broken(make_pipeline, edit)
    assert problems == ["task b: task 'a' has no output artifact 'x'"]


def test_unwired_required_input_is_reported(make_pipeline):
    problems = _broken(make_pipeline, lambda d: d["root"]["dag"]["tasks"]["b"].pop("inputs"))
    assert problems == ["task b: required input 'x' is not wired"]


def test_unknown_component_and_dependency_are_reported(make_pipeline):
    def edit(doc):
        doc["root"]["dag"]["tasks"]["b"]["dependentTasks"] = ["a", "zzz"]
        doc["root"]["dag"]["tasks"]["a"]["componentRef"]["name"] = "comp-nope"

    problems = _broken(make_pipeline, edit)
    assert "task a: component 'comp-nope' does not exist" in problems
    assert "task b: depends on unknown task 'zzz'" in problems


def test_platform_spec_is_parsed_strictly(make_pipeline):
    pipeline = make_pipeline('# %% tags=["step:a", "label:a:b"]\nx = 1\n')
    documents = compile_documents(pipeline, **OPTIONS)
    config = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-a"]
    config["podMetadata"]["colour"] = "red"
    problems = validate_documents(documents)
    assert any("PlatformSpec executor exec-a" in p and "colour" in p for p in problems)


def test_libyaml_and_pure_emitters_agree(make_pipeline, monkeypatch):
    import yaml

    from cellpipe.kfp import yaml as kfp_yaml

    documents = compile_documents(make_pipeline(NOTEBOOK), **OPTIONS)
    fast = dump_yaml(documents)

    class Pure(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    Pure.add_representer(str, kfp_yaml._represent_str)
    monkeypatch.setattr(kfp_yaml, "_Dumper", Pure)
    assert dump_yaml(documents) == fast


def test_the_pod_stand_in_for_cellpipe_logs_metrics_and_skips_registering(capsys) -> None:
    logged: dict[str, object] = {}
    shim = _cp_cellpipe_shim(logged)
    shim.log_metric("acc", 0.5)
    assert logged == {"acc": 0.5}
    assert shim.register_model(object(), "wine", alias="staging") is None
    assert "register_model('wine'): not registered on the cluster" in capsys.readouterr().out
