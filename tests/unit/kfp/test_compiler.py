from __future__ import annotations

import pytest

from cellpipe.errors import CompileError
from cellpipe.kfp import compile_documents, compile_pipeline
from cellpipe.kfp.components import artifact_types
from cellpipe.kfp.validate import validate_documents
from cellpipe.kfp.yaml import dump_yaml, load_yaml

pytestmark = pytest.mark.kfp

OPTIONS = {"image": None, "cellpipe_version": "0.0.0", "kfp_version": "2.17.3"}

BASIC = """
# %% tags=["pipeline-parameters"]
N = 3
RATE = 0.5

# %% tags=["step:load"]
data = list(range(N))

# %% tags=["step:train", "prev:load"]
class Model:
    def fit(self, values):
        self.total = sum(values) * RATE
        return self
model = Model()
model.fit(data)
score = model.total

# %% tags=["step:report"]
print(score, data, model.total)

# %% tags=["pipeline-metrics"]
score
"""


def test_compile_is_deterministic_and_valid(make_pipeline):
    pipeline = make_pipeline(BASIC)
    first = dump_yaml(compile_documents(pipeline, **OPTIONS))
    second = dump_yaml(compile_documents(make_pipeline(BASIC), **OPTIONS))
    assert first == second
    assert first.endswith("\n")
    assert validate_documents(load_yaml(first)) == []


def test_structure_wires_every_input(make_pipeline):
    spec = compile_pipeline(make_pipeline(BASIC), **OPTIONS)
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == ["load", "report", "train"]
    assert tasks["report"]["dependentTasks"] == ["load", "train"]
    assert tasks["train"]["inputs"]["artifacts"]["data"] == {
        "taskOutputArtifact": {"producerTask": "load", "outputArtifactKey": "data"}
    }
    assert tasks["train"]["inputs"]["parameters"] == {"RATE": {"componentInputParameter": "RATE"}}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["N"] == {"parameterType": "NUMBER_INTEGER", "defaultValue": 3, "isOptional": True}
    assert params["RATE"]["parameterType"] == "NUMBER_DOUBLE"
    outputs = spec["components"]["comp-train"]["outputDefinitions"]["artifacts"]
    assert outputs["model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert outputs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert outputs["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert spec["pipelineInfo"]["name"] == "nb"


def test_parameter_overrides_become_defaults(make_pipeline):
    spec = compile_pipeline(make_pipeline(BASIC), parameters={"N": 10}, **OPTIONS)
    assert spec["root"]["inputDefinitions"]["parameters"]["N"]["defaultValue"] == 10


def test_name_is_made_kfp_safe(make_pipeline):
    spec = compile_pipeline(make_pipeline(BASIC), name="My Wine_Pipeline!", **OPTIONS)
    assert spec["pipelineInfo"]["name"] == "my-wine-pipeline"


def test_default_image_installs_pinned_packages_and_image_switches_it_off(make_pipeline):
    text = """
    # %% tags=["imports"]
    import yaml

    # %% tags=["step:a"]
    x = yaml.safe_dump({"a": 1})
    """
    pipeline = make_pipeline(text)
    spec = compile_pipeline(pipeline, **OPTIONS)
    command = spec["deploymentSpec"]["executors"]["exec-a"]["container"]["command"]
    assert command[:2] == ["sh", "-c"]
    assert "PyYAML==" in command[2]
    assert "kfp==2.17.3 --no-deps" in command[2]
    spec = compile_pipeline(pipeline, **{**OPTIONS, "image": "registry/x:1"})
    container = spec["deploymentSpec"]["executors"]["exec-a"]["container"]
    assert container["image"] == "registry/x:1"
    assert container["command"][:2] == ["sh", "-ec"]
    assert "pip install" not in " ".join(container["command"][:3])


def test_artifact_type_heuristic(make_pipeline):
    pipeline = make_pipeline(
        """
        # %% tags=["step:a"]
        X_train = [1]
        df = {}
        clf = object()
        best_model = 1
        rows = read_csv("x")
        names = ["a"]
        # %% tags=["step:b"]
        print(X_train, df, clf, best_model, rows, names)
        """.replace("read_csv", "(lambda p: [p])")
    )
    types = artifact_types(pipeline.step("a"))
    assert types == {
        "X_train": "system.Dataset",
        "best_model": "system.Model",
        "clf": "system.Artifact",
        "df": "system.Dataset",
        "names": "system.Artifact",
        "rows": "system.Artifact",
    }


def test_input_and_output_of_the_same_name_get_distinct_keys(make_pipeline):
    pipeline = make_pipeline(
        """
        # %% tags=["step:a"]
        records = [1]
        # %% tags=["step:b", "prev:a"]
        records = records + [2]
        # %% tags=["step:c", "prev:b"]
        print(records)
        """
    )
    documents = compile_documents(pipeline, **OPTIONS)
    assert validate_documents(documents) == []
    b = documents[0]["components"]["comp-b"]
    assert list(b["inputDefinitions"]["artifacts"]) == ["records"]
    assert "records_out" in b["outputDefinitions"]["artifacts"]
    c_inputs = documents[0]["root"]["dag"]["tasks"]["c"]["inputs"]["artifacts"]
    assert c_inputs["records"]["taskOutputArtifact"]["outputArtifactKey"] == "records_out"


SETTINGS = [
    "step:a",
    "limit:cpu:2",
    "limit:memory:4Gi",
    "limit:nvidia.com/gpu:1",
    "cache:false",
    "annotation:team:ml",
    "label:tier:gold",
    "secret:db:password=DB_PASSWORD",
    "secret:tls:/etc/tls",
    "report:false",
    "image:registry/gpu:2",
]


def test_settings_map_to_resources_caching_and_platform_spec(make_pipeline):
    tags = ", ".join(f'"{t}"' for t in SETTINGS)
    pipeline = make_pipeline(f"# %% tags=[{tags}]\nx = 1\n")
    documents = compile_documents(pipeline, **OPTIONS)
    assert validate_documents(documents) == []
    spec, platform = documents
    container = spec["deploymentSpec"]["executors"]["exec-a"]["container"]
    assert container["image"] == "registry/gpu:2"
    assert container["resources"] == {
        "resourceCpuLimit": "2",
        "resourceMemoryLimit": "4Gi",
        "accelerator": {"resourceType": "nvidia.com/gpu", "resourceCount": "1"},
    }
    assert spec["root"]["dag"]["tasks"]["a"]["cachingOptions"] == {"enableCache": False}
    outputs = spec["components"]["comp-a"]["outputDefinitions"]["artifacts"]
    assert "report" not in outputs
    config = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-a"]
    assert config["podMetadata"] == {"annotations": {"team": "ml"}, "labels": {"tier": "gold"}}
    assert config["secretAsEnv"][0]["keyToEnv"] == [
        {"secretKey": "password", "envVar": "DB_PASSWORD"}
    ]
    assert config["secretAsVolume"][0]["mountPath"] == "/etc/tls"


@pytest.mark.parametrize(
    ("cell", "match"),
    [
        ('# %% tags=["step:a"]\n!ls\nx = 1\n', r"step 'a' \(cell \d+\) uses '!ls'"),
        ('# %% tags=["step:a", "limit:disk:1"]\nx = 1\n', "limit 'disk'.*supported: cpu"),
        ('# %% tags=["step:a", "limit:cpu:lots"]\nx = 1\n', "limit:cpu:lots"),
        ('# %% tags=["step:a", "secret:db"]\nx = 1\n', "step 'a' has secret:db"),
        ('# %% tags=["step:a"]\nimport not_installed_pkg\nx = 1\n', "not_installed_pkg"),
        (
            '# %% tags=["pipeline-parameters"]\nP = None\n# %% tags=["step:a"]\nx = P\n',
            "parameter 'P'.*NoneType",
        ),
    ],
    ids=["shell", "unknown-limit", "bad-cpu", "secret-form", "not-installed", "none-param"],
)
def test_unsupported_constructs_name_the_step(make_pipeline, cell, match):
    pipeline = make_pipeline(cell)
    with pytest.raises(CompileError, match=match):
        compile_documents(pipeline, **OPTIONS)


def test_allowed_magics_compile(make_pipeline):
    pipeline = make_pipeline('# %% tags=["step:a"]\n%matplotlib inline\nx = 1\n')
    assert validate_documents(compile_documents(pipeline, **OPTIONS)) == []


def test_a_step_inherits_the_packages_of_the_steps_whose_outputs_it_reads(make_pipeline):
    from cellpipe.kfp.compiler import with_producer_packages
    from cellpipe.kfp.executors import requirements

    pipeline = make_pipeline(
        """
        # %% tags=["step:make"]
        import numpy
        values = numpy.arange(3)

        # %% tags=["step:other"]
        n = 1

        # %% tags=["step:use"]
        total = sum(values.tolist()) + n
        """
    )
    assert [p.module for p in pipeline.step("use").packages] == []
    inherited = with_producer_packages(pipeline)
    assert [p.module for p in inherited.step("use").packages] == ["numpy"]
    assert requirements(inherited.step("use")) == requirements(pipeline.step("make"))
    assert inherited.step("other").packages == ()


def test_task_names_stay_within_kubernetes_name_limits(make_pipeline):
    """Issue 10, item 7: task names become Kubernetes names (63 characters at most); the KFP
    API refuses pipeline names over 100."""
    import dataclasses

    pipeline = make_pipeline('# %% tags=["step:a"]\nx = 1\n\n# %% tags=["step:b"]\ny = 2\n')
    long = "v" * 90
    steps = tuple(
        dataclasses.replace(step, name=f"{long}_{step.name}", upstream=())
        for step in pipeline.steps
    )
    pipeline = dataclasses.replace(pipeline, steps=steps, name="p" * 150)
    documents = compile_documents(pipeline, **OPTIONS)
    tasks = documents[0]["root"]["dag"]["tasks"]
    assert sorted(tasks) == ["v" * 61 + "-2", "v" * 63]
    assert documents[0]["pipelineInfo"]["name"] == "p" * 100
    assert validate_documents(load_yaml(dump_yaml(documents))) == []


COMPILE_IN_A_PROCESS = """
import sys
from pathlib import Path

from cellpipe.kfp import compile_documents
from cellpipe.kfp.yaml import dump_yaml
from cellpipe.notebook import load_pipeline

documents = compile_documents(
    load_pipeline(Path(sys.argv[1])), image=None, cellpipe_version="0.0.0", kfp_version="2.17.3"
)
sys.stdout.write(dump_yaml(documents))
"""


@pytest.mark.slow
@pytest.mark.parametrize("example", ["wine/wine.ipynb", "diamond/diamond.ipynb"])
def test_yaml_is_byte_identical_across_hash_seeds(repo_root, example):
    """Mutation gap (issue 10): a set or dict order that depends on str hashing would make
    the YAML differ between processes; in-process tests cannot see that."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import cellpipe

    src = str(Path(cellpipe.__file__).resolve().parents[1])
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": src}
        done = subprocess.run(
            [sys.executable, "-c", COMPILE_IN_A_PROCESS, str(repo_root / "examples" / example)],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert b"deploymentSpec" in outputs[0]
