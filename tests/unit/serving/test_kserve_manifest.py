"""The KServe InferenceService manifest of a registered version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cellpipe.errors import ServingError
from cellpipe.serving import inference_service, write_manifest


def test_a_scikit_learn_version(make_source: Callable[[], Any], tmp_path: Path) -> None:
    version = make_source().resolve("iris@production")

    path = write_manifest(version, tmp_path / "iris.yaml")

    text = path.read_text()
    assert text.startswith("# KServe InferenceService for iris:2")
    assert "# SET storageUri BEFORE APPLYING" in text
    manifest = yaml.safe_load(text)
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
                "cellpipe.dev/run": "train-2",
            },
        },
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "protocolVersion": "v2",
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
    )

    text = path.read_text()
    manifest = yaml.safe_load(text)
    assert "SET storageUri" not in text
    assert manifest["metadata"]["name"] == "iris-classifier-v1"
    assert manifest["metadata"]["namespace"] == "ml"
    assert manifest["spec"]["predictor"]["model"]["storageUri"] == "gs://models/iris/1"


def test_only_scikit_learn_objects(make_source: Callable[[], Any]) -> None:
    version = make_source().resolve("double")

    with pytest.raises(ServingError, match="written for scikit-learn objects only"):
        inference_service(version)
