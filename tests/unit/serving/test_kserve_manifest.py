"""The KServe InferenceService manifest of a registered version (issue 13, manifest half).

Every manifest written here is also checked against KServe's OpenAPI types (offline, from
tests/fixtures/kserve/, see tests/kserve_openapi.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cellpipe.errors import ServingError
from cellpipe.registry.model import ModelVersion, Signature, TensorSpec
from cellpipe.serving import inference_service, kserve_manifest, write_manifest
from cellpipe.serving.image import serve_command
from cellpipe.serving.manifest import KSERVE_RELEASES, MAX_NAME_LENGTH, render_manifest
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import ArtifactRef
from kserve_openapi import problems

SKLEARN_15 = {"scikit-learn": "1.5.2", "numpy": "2.1.0"}
IMAGE = "registry.example.com/ml/cellpipe-model-double:0123456789ab"


def _version(type_name: str, *, serializer: str = "joblib", name: str = "boost") -> ModelVersion:
    return ModelVersion(
        name=name,
        version=3,
        artifact=ArtifactRef(
            digest=ArtifactDigest("sha256:" + "ab" * 32),
            serializer=serializer,
            serializer_version=2,
            size=100,
            type_name=type_name,
        ),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def _valid(document: dict[str, Any]) -> dict[str, Any]:
    assert problems(document) == []
    return document


def test_a_scikit_learn_version_the_runtime_loads(
    make_source: Callable[[], Any], tmp_path: Path
) -> None:
    version = make_source().resolve("iris@production")

    path = write_manifest(version, tmp_path / "iris.yaml", packages=SKLEARN_15)

    text = path.read_text()
    assert text.startswith("# KServe InferenceService for iris:2")
    assert "# SET storageUri BEFORE APPLYING" in text
    assert "# scikit-learn 1.5.2 (recorded with the version)" in text
    manifest = _valid(yaml.safe_load(text))
    assert manifest == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "iris",
            "labels": {
                "app.kubernetes.io/managed-by": "cellpipe",
                "cellpipe.dev/model": "iris",
                "cellpipe.dev/version": "2",
            },
            "annotations": {
                "cellpipe.dev/model-version": "iris:2",
                "cellpipe.dev/artifact": version.artifact.digest,
                "cellpipe.dev/artifact-type": version.artifact.type_name,
                "cellpipe.dev/predictor": "sklearn",
                "cellpipe.dev/run": "train-2",
            },
        },
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "sklearn", "version": "1"},
                    "protocolVersion": "v2",
                    "runtimeVersion": "v0.20.0",
                    "storageUri": "s3://SET-ME/models/iris/2",
                }
            }
        },
    }


def test_storage_uri_name_and_namespace(make_source: Callable[[], Any], tmp_path: Path) -> None:
    version = make_source().resolve("iris:1")

    path = write_manifest(
        version,
        tmp_path / "m.yaml",
        storage_uri="gs://models/iris/1",
        name="Iris_Classifier.v1",
        namespace="ml",
        packages=SKLEARN_15,
    )

    text = path.read_text()
    manifest = _valid(yaml.safe_load(text))
    assert "SET storageUri" not in text
    assert manifest["metadata"]["name"] == "iris-classifier-v1"
    assert manifest["metadata"]["namespace"] == "ml"
    assert manifest["spec"]["predictor"]["model"]["storageUri"] == "gs://models/iris/1"


@pytest.mark.parametrize(
    ("recorded", "kserve", "runtime"),
    [
        ("1.5.2", "v0.20.0", "v0.20.0"),
        ("1.5.0", "v0.15.1", "v0.15.1"),
        ("1.3.2", "v0.20.0", "v0.13.1"),  # the newest image that ships scikit-learn 1.3
        ("1.3.0", "v0.12.0", "v0.12.0"),
    ],
)
def test_item13_model_format_and_runtime_version_follow_the_recorded_scikit_learn(
    make_source: Callable[[], Any], recorded: str, kserve: str, runtime: str
) -> None:
    version = make_source().resolve("iris:1")

    document = _valid(
        inference_service(version, packages={"scikit-learn": recorded}, kserve_version=kserve)
    )

    model = document["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "sklearn", "version": "1"}
    assert model["runtimeVersion"] == runtime
    shipped = {r.tag: r.sklearn for r in KSERVE_RELEASES}
    assert shipped[runtime] == ".".join(recorded.split(".")[:2])


def test_item13_a_scikit_learn_no_runtime_ships_gets_the_custom_predictor(
    make_source: Callable[[], Any],
) -> None:
    version = make_source().resolve("iris:1")

    manifest = kserve_manifest(version, packages={"scikit-learn": "1.9.1"}, image=IMAGE)

    assert manifest.predictor == "custom"
    assert "scikit-learn 1.9.1" in manifest.notes[0]
    assert "ship scikit-learn 1.3, 1.5, which cannot load this model" in manifest.notes[0]
    _valid(manifest.document)
    with pytest.raises(ServingError, match="no KServe runtime serves iris:1") as caught:
        kserve_manifest(version, packages={"scikit-learn": "1.9.1"}, predictor="kserve")
    assert "--predictor auto" in str(caught.value.hint)


def test_item13_without_recorded_packages_the_installed_scikit_learn_decides_and_is_said(
    make_source: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    version = make_source().resolve("iris:1")  # the memory source's versions record nothing
    installed = {"scikit-learn": "1.5.1"}
    monkeypatch.setattr(
        "cellpipe.serving.manifest.importlib.metadata.version", lambda name: installed[name]
    )

    manifest = kserve_manifest(version)

    assert manifest.predictor == "sklearn"
    text = render_manifest(manifest)
    assert "# scikit-learn 1.5.1 (installed here when the manifest was written; the version " in (
        text
    )
    installed["scikit-learn"] = "1.8.0"
    assert kserve_manifest(version, image=IMAGE).predictor == "custom"


def test_item13_predict_proba_sets_the_sklearn_runtimes_environment_variable(
    make_source: Callable[[], Any],
) -> None:
    source = make_source()

    document = _valid(
        inference_service(source.resolve("iris:2"), packages=SKLEARN_15, predict_proba=True)
    )

    model = document["spec"]["predictor"]["model"]
    assert model["env"] == [{"name": "PREDICT_PROBA", "value": "true"}]
    assert (
        "env"
        not in inference_service(source.resolve("iris:2"), packages=SKLEARN_15)["spec"][
            "predictor"
        ]["model"]
    )
    with pytest.raises(ServingError, match="has no predict_proba output"):
        inference_service(source.resolve("wine"), packages=SKLEARN_15, predict_proba=True)
    with pytest.raises(ServingError, match="gets a custom predictor") as caught:
        inference_service(source.resolve("double"), image=IMAGE, predict_proba=True)
    assert "predict_proba" in str(caught.value.hint)


def test_item13_a_callable_gets_a_custom_predictor_running_cellpipe_serve(
    make_source: Callable[[], Any], tmp_path: Path
) -> None:
    version = make_source().resolve("double")

    path = write_manifest(version, tmp_path / "double.yaml", image=IMAGE)

    text = path.read_text()
    assert "storageUri" not in text
    assert f"# The predictor runs `cellpipe serve double:1` in the image {IMAGE}," in text
    document = _valid(yaml.safe_load(text))
    assert document["metadata"]["annotations"]["cellpipe.dev/predictor"] == "custom"
    (container,) = document["spec"]["predictor"]["containers"]
    assert container["image"] == IMAGE
    assert [*container["command"], *container["args"]] == serve_command(version)
    assert container["args"] == ["serve", "double:1", "--host", "0.0.0.0", "--port", "8080",
                                 "--project", "/srv/cellpipe"]  # fmt: skip
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"] == {"httpGet": {"path": "/v2/health/ready", "port": 8080}}
    assert container["securityContext"]["runAsNonRoot"] is True
    with pytest.raises(ServingError, match="needs a custom predictor") as caught:
        inference_service(version)
    assert "cellpipe image --model double:1" in str(caught.value.hint)


def test_item13_custom_when_asked_even_for_a_runtime_model(
    make_source: Callable[[], Any],
) -> None:
    manifest = kserve_manifest(
        make_source().resolve("iris:2"), packages=SKLEARN_15, predictor="custom", image=IMAGE
    )

    assert manifest.predictor == "custom"
    assert manifest.notes == ("custom predictor as asked (KServe's sklearn runtime would fit)",)
    _valid(manifest.document)


def test_item13_a_scikit_learn_object_holding_notebook_code_gets_the_custom_predictor() -> None:
    version = _version("sklearn.pipeline.Pipeline", serializer="cloudpickle")

    manifest = kserve_manifest(version, packages=SKLEARN_15, image=IMAGE)

    assert manifest.predictor == "custom"
    assert "stored with cloudpickle" in manifest.notes[0]


@pytest.mark.parametrize(
    ("type_name", "packages", "kserve", "expected"),
    [
        ("xgboost.core.Booster", {"xgboost": "2.1.3"}, "v0.20.0", ("xgboost", "2", "v0.20.0")),
        ("xgboost.core.Booster", {"xgboost": "2.0.3"}, "v0.15.2", ("xgboost", "1", "v0.15.2")),
        ("xgboost.core.Booster", {"xgboost": "1.7.6"}, "v0.20.0", ("xgboost", "2", "v0.11.2")),
        ("xgboost.core.Booster", {"xgboost": "3.0.0"}, "v0.20.0", None),
        ("lightgbm.basic.Booster", {"lightgbm": "4.6.0"}, "v0.20.0", ("lightgbm", "4", "v0.20.0")),
        ("lightgbm.basic.Booster", {"lightgbm": "4.6.0"}, "v0.16.0", None),  # ships 4.5
        ("lightgbm.basic.Booster", {"lightgbm": "3.3.5"}, "v0.13.1", ("lightgbm", "3", "v0.13.1")),
        ("xgboost.sklearn.XGBClassifier", {"xgboost": "2.1.3"}, "v0.20.0", None),
        ("lightgbm.sklearn.LGBMClassifier", {"lightgbm": "4.6.0"}, "v0.20.0", None),
    ],
)
def test_item13_xgboost_and_lightgbm_boosters_get_their_runtimes_when_they_fit(
    type_name: str,
    packages: dict[str, str],
    kserve: str,
    expected: tuple[str, str, str] | None,
) -> None:
    manifest = kserve_manifest(
        _version(type_name), packages=packages, kserve_version=kserve, image=IMAGE
    )

    _valid(manifest.document)
    if expected is None:
        assert manifest.predictor == "custom"
        assert "containers" in manifest.document["spec"]["predictor"]
        return
    model = manifest.document["spec"]["predictor"]["model"]
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) == expected[:2]
    assert model["runtimeVersion"] == expected[2]
    saved = "model.json" if expected[0] == "xgboost" else "model.bst"
    assert f"save_model('{saved}')" in render_manifest(manifest)


def test_item13_the_sklearn_wrapper_of_xgboost_says_why_it_is_custom() -> None:
    manifest = kserve_manifest(_version("xgboost.sklearn.XGBClassifier"), image=IMAGE)

    assert "Booster.predict's raw output" in manifest.notes[0]


def test_item13_names_leave_room_for_the_predictor_suffix(
    make_source: Callable[[], Any],
) -> None:
    version = make_source().resolve("iris:2")
    longest = "a" * MAX_NAME_LENGTH

    assert 63 - len("-predictor") == MAX_NAME_LENGTH
    document = inference_service(version, name=longest, packages=SKLEARN_15)
    assert len(document["metadata"]["name"] + "-predictor") == 63
    with pytest.raises(ServingError, match="at most 53") as caught:
        inference_service(version, name=longest + "b", packages=SKLEARN_15)
    assert "--name" in str(caught.value.hint)
    long_model = dataclasses.replace(version, name="m" * 60)
    with pytest.raises(ServingError, match=r"m{60}-predictor"):
        inference_service(long_model, packages=SKLEARN_15)
    assert (
        inference_service(long_model, name="wine", packages=SKLEARN_15)["metadata"]["labels"][
            "cellpipe.dev/model"
        ]
        == "m" * 60
    )


def test_item13_a_long_name_and_namespace_warn_about_the_raw_deployment_host(
    make_source: Callable[[], Any],
) -> None:
    version = make_source().resolve("iris:2")

    manifest = kserve_manifest(
        version, name="a" * 40, namespace="team-analytics", packages=SKLEARN_15
    )

    (warning,) = manifest.warnings
    assert "RawDeployment" in warning
    assert "at most 38 characters" in warning
    assert "# WARNING: in KServe's RawDeployment" in render_manifest(manifest)
    assert kserve_manifest(version, namespace="ml", packages=SKLEARN_15).warnings == ()
    with pytest.raises(ServingError, match="invalid namespace"):
        kserve_manifest(version, namespace="ML_team", packages=SKLEARN_15)


def test_item13_kserve_releases_are_checked(make_source: Callable[[], Any]) -> None:
    version = make_source().resolve("iris:2")

    with pytest.raises(ServingError, match="older than the releases cellpipe knows"):
        kserve_manifest(version, packages=SKLEARN_15, kserve_version="v0.10.0")
    with pytest.raises(ServingError, match="invalid KServe release"):
        kserve_manifest(version, packages=SKLEARN_15, kserve_version="latest")
    newer = kserve_manifest(version, packages=SKLEARN_15, kserve_version="0.21.0")
    assert newer.document["spec"]["predictor"]["model"]["runtimeVersion"] == "v0.20.0"


def test_header_comments_never_carry_raw_user_text() -> None:
    version = _version("notebook.Thing\nkind: Secret", serializer="cloudpickle")

    text = render_manifest(kserve_manifest(version, image=IMAGE))

    assert yaml.safe_load(text)["kind"] == "InferenceService"
    assert all(line.startswith("#") for line in text.split("apiVersion:")[0].splitlines())


def test_the_validator_catches_what_kserve_would_refuse() -> None:
    document = inference_service(_version("python.double", serializer="cloudpickle"), image=IMAGE)
    container = document["spec"]["predictor"]["containers"][0]
    container["port"] = 8080  # a typo'd field
    container["args"] = "serve x"  # a shell string, not a list
    del container["name"]
    document["spec"]["predictor"]["model"] = {"storageUri": "s3://x"}  # no modelFormat

    found = problems(document)

    assert "$.spec.predictor.containers[0]: V1Container has no field 'port'" in found
    assert any("containers[0].args: expected a list" in p for p in found)
    assert "$.spec.predictor.containers[0]: V1Container requires 'name'" in found
    assert "$.spec.predictor.model: V1beta1ModelSpec requires 'modelFormat'" in found
    crd = "crd $.spec.predictor.containers[0]"
    assert f"{crd}: Additional properties are not allowed ('port' was unexpected)" in found
    assert f"{crd}.args: 'serve x' is not of type 'array'" in found
    assert f"{crd}: 'name' is a required property" in found
    container["name"], container["args"] = "kserve-container", ["serve"]
    del container["port"]
    container["readinessProbe"]["httpGet"]["port"] = [8080]  # IntOrString: the CRD knows
    assert problems(document) == [
        "$.spec.predictor.model: V1beta1ModelSpec requires 'modelFormat'",
        f"{crd}.readinessProbe.httpGet.port: [8080] is not valid under any of the given schemas",
    ]


def test_signatures_without_a_second_output_refuse_predict_proba() -> None:
    version = dataclasses.replace(
        _version("sklearn.svm.SVC"),
        signature=Signature(
            inputs=(TensorSpec(name="x", datatype="FP64", shape=(-1, 2)),),
            outputs=(TensorSpec(name="predict", datatype="INT64", shape=(-1,)),),
        ),
    )

    with pytest.raises(ServingError, match=r"boost:3 has no predict_proba output"):
        kserve_manifest(version, packages=SKLEARN_15, predict_proba=True)


def test_the_custom_predictor_takes_its_token_from_a_secret(
    make_source: Callable[[], Any],
) -> None:
    source = make_source()

    document = _valid(
        inference_service(source.resolve("double"), image=IMAGE, token_secret="serve-auth:key.1")
    )

    (container,) = document["spec"]["predictor"]["containers"]
    assert container["env"] == [
        {
            "name": "CELLPIPE_SERVE_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "serve-auth", "key": "key.1"}},
        }
    ]
    default_key = inference_service(source.resolve("double"), image=IMAGE, token_secret="auth")
    assert default_key["spec"]["predictor"]["containers"][0]["env"][0]["valueFrom"] == {
        "secretKeyRef": {"name": "auth", "key": "token"}
    }
    with pytest.raises(ServingError, match="invalid --token-secret"):
        inference_service(source.resolve("double"), image=IMAGE, token_secret="Auth Secret")
    with pytest.raises(ServingError, match="takes no token"):
        inference_service(source.resolve("iris:2"), packages=SKLEARN_15, token_secret="auth")


def test_the_image_is_derived_only_for_a_custom_predictor(
    make_source: Callable[[], Any],
) -> None:
    source = make_source()

    def unbuildable() -> str:
        raise ServingError("cannot pin the package 'x y'")

    runtime = kserve_manifest(source.resolve("iris:2"), packages=SKLEARN_15, image=unbuildable)
    assert (runtime.predictor, runtime.image) == ("sklearn", None)
    custom = kserve_manifest(source.resolve("double"), image=lambda: IMAGE)
    assert custom.image == IMAGE
    with pytest.raises(ServingError, match="cannot pin the package"):
        kserve_manifest(source.resolve("double"), image=unbuildable)


def test_storage_uris_kserve_cannot_download_are_refused(make_source: Callable[[], Any]) -> None:
    version = make_source().resolve("iris:2")

    with pytest.raises(ServingError, match="cannot download a model from 'models/iris'"):
        inference_service(version, packages=SKLEARN_15, storage_uri="models/iris")
    uri = "pvc://models/iris/2"
    document = inference_service(version, packages=SKLEARN_15, storage_uri=uri)
    assert document["spec"]["predictor"]["model"]["storageUri"] == uri
