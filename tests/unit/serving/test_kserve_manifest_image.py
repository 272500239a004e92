"""The build context of a custom predictor's image (`cellpipe.serving.image`), issue 13."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from cellpipe.errors import ServingError
from cellpipe.serving.image import (
    MODEL_FILE,
    image_repository,
    model_context,
    pinned_requirements,
    serve_command,
)
from cellpipe.storage.protocols import ArtifactDigest

PACKAGES = {"scikit-learn": "1.9.1", "numpy": "2.3.0", "joblib": "1.6.0"}


def test_item13_the_context_serves_the_version_with_cellpipe_serve(
    make_source: Callable[[], Any],
) -> None:
    version = make_source().resolve("iris@production")

    context = model_context(
        version, packages=PACKAGES, cellpipe="0.1.0", base_image="python:3.12-slim"
    )

    assert sorted(context.files) == ["Dockerfile", MODEL_FILE, "requirements.txt"]
    assert context.requirements == (
        "cellpipe[serve]==0.1.0",
        "joblib==1.6.0",
        "numpy==2.3.0",
        "scikit-learn==1.9.1",
    )
    assert context.files["requirements.txt"] == "".join(f"{r}\n" for r in context.requirements)
    dockerfile = context.files["Dockerfile"].splitlines()
    assert "FROM python:3.12-slim" in dockerfile
    assert "COPY --chown=1000:1000 project /srv/cellpipe" in dockerfile
    assert "USER 1000" in dockerfile
    assert "EXPOSE 8080" in dockerfile
    command = serve_command(version)
    assert command == ["cellpipe", "serve", "iris:2", "--host", "0.0.0.0", "--port", "8080",
                       "--project", "/srv/cellpipe"]  # fmt: skip
    entry = next(line for line in dockerfile if line.startswith("ENTRYPOINT "))
    cmd = next(line for line in dockerfile if line.startswith("CMD "))
    assert json.loads(entry.removeprefix("ENTRYPOINT ")) + json.loads(cmd[4:]) == command
    described = json.loads(context.files[MODEL_FILE])
    assert described["model"] == "iris:2"
    assert described["artifact"] == version.artifact.digest
    assert context.tag.startswith("cellpipe-model-iris:")


def test_item13_the_tag_is_derived_from_the_content(make_source: Callable[[], Any]) -> None:
    version = make_source().resolve("iris:2")

    def tag(**changes: Any) -> str:
        options: dict[str, Any] = {
            "packages": PACKAGES,
            "cellpipe": "0.1.0",
            "base_image": "python:3.12-slim",
        }
        subject = version
        if "digest" in changes:
            artifact = dataclasses.replace(version.artifact, digest=changes.pop("digest"))
            subject = dataclasses.replace(version, artifact=artifact)
        options.update(changes)
        return model_context(subject, **options).tag

    assert tag() == tag()
    assert tag() != tag(digest=ArtifactDigest("sha256:" + "cd" * 32))
    assert tag() != tag(packages={**PACKAGES, "numpy": "2.3.1"})
    assert tag() != tag(base_image="python:3.13-slim")
    assert tag() != tag(cellpipe="0.2.0")


@pytest.mark.parametrize(
    ("packages", "message"),
    [
        ({"numpy": "2.0 --index-url http://evil.example/simple"}, "not a version number"),
        ({"numpy\n--extra-index-url x": "2.0"}, "not a distribution name"),
        ({"-e ../x": "1"}, "not a distribution name"),
        ({"numpy[a b]": "1"}, "not a distribution name"),
    ],
)
def test_item13_only_plain_names_and_versions_reach_requirements_txt(
    packages: dict[str, str], message: str
) -> None:
    with pytest.raises(ServingError, match=message):
        pinned_requirements(packages, cellpipe="0.1.0")


def test_a_recorded_cellpipe_is_replaced_by_the_serving_extra() -> None:
    pinned = pinned_requirements(
        {"cellpipe": "0.0.9", "Scikit_Learn": "1.5.2", "pandas[pyarrow]": "2.2.3"},
        cellpipe="0.1.0",
    )

    assert pinned == ("cellpipe[serve]==0.1.0", "pandas[pyarrow]==2.2.3", "Scikit_Learn==1.5.2")


def test_the_base_image_is_checked(make_source: Callable[[], Any]) -> None:
    version = make_source().resolve("iris:2")

    with pytest.raises(ServingError, match="invalid base image"):
        model_context(version, packages={}, cellpipe="0.1.0", base_image="python\nRUN evil")


def test_image_repositories_are_lowercase_docker_names() -> None:
    assert image_repository("Wine_Model..v2") == "model-wine-model-v2"
    assert image_repository("iris") == "model-iris"
