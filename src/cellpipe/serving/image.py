"""The container image that serves one model version: its build context.

Owns: `model_context` (the Dockerfile, the pinned ``requirements.txt`` and
``cellpipe-model.json`` of an image whose entry point is ``cellpipe serve NAME:N`` on port
8080, with the one-version registry exported beside them in ``project/``), `serve_command`
(that command as an argument list, which the KServe manifest's custom predictor runs too) and
`pinned_requirements` (distribution -> version pairs checked and written as ``NAME==VERSION``).

Invariants: the context is a pure, deterministic function of the version, its requirements and
the base image, so `cellpipe image --model` and `cellpipe serve --manifest` derive the same tag
(`cellpipe.storage.images.image_tag`) without talking to each other; the tag covers the
model's artifact digest (in ``cellpipe-model.json``), so another object is another tag. No
user text is pasted into the Dockerfile or requirements unchecked: distribution names and
versions must match PEP 508/440 shapes (no spaces, no pip options), and the command is written
in Docker's JSON (exec) form. The image runs as an unprivileged user (uid 1000) owning the
exported project.

Must not depend on: the runner, kfp, notebooks, config, api (the caller exports the registry
with `ModelRegistry.copy_version` and chooses the packages).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from cellpipe.errors import ServingError
from cellpipe.registry.model import ModelVersion
from cellpipe.storage.images import ImageContext, image_tag

__all__ = [
    "MODEL_FILE",
    "PROJECT_FOLDER",
    "PROJECT_IN_IMAGE",
    "SERVE_PORT",
    "TOKEN_VARIABLE",
    "image_repository",
    "model_context",
    "pinned_requirements",
    "serve_command",
]

SERVE_PORT = 8080
"""The HTTP port of the served model: KServe's default container port."""

PROJECT_FOLDER = "project"
"""The context's folder holding the exported one-version project (``.cellpipe/``)."""

PROJECT_IN_IMAGE = "/srv/cellpipe"
"""Where the exported project lives inside the image (``cellpipe serve --project``)."""

TOKEN_VARIABLE = "CELLPIPE_SERVE_TOKEN"
"""The environment variable `cellpipe serve` reads its bearer token from (never the command
line, where other users of the machine see it)."""

MODEL_FILE = "cellpipe-model.json"
"""The context's description of the version it serves (part of the tag's content)."""

_UID = 1000

_DOCKERFILE = """\
# Written by `cellpipe image --model`: serves {ref} over the Open Inference Protocol v2
# on port {port}. The registry in {folder}/ holds that one version, with the same number.
FROM {base}
COPY requirements.txt /tmp/cellpipe-requirements.txt
RUN python3 -m pip install --no-cache-dir -r /tmp/cellpipe-requirements.txt \\
 && useradd --uid {uid} --no-create-home --home-dir {root} cellpipe
COPY --chown={uid}:{uid} {folder} {root}
USER {uid}
ENV HOME={root} MPLBACKEND=Agg
WORKDIR {root}
EXPOSE {port}
ENTRYPOINT {entrypoint}
CMD {cmd}
"""

_DISTRIBUTION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_VERSION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.+!_-]*[A-Za-z0-9])?")
_EXTRAS = re.compile(r"\[[A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*\]")


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def serve_command(version: ModelVersion) -> list[str]:
    """Return ``cellpipe serve NAME:N --host 0.0.0.0 --port 8080 --project /srv/cellpipe``.

    An argument list (never a shell string); the reference is the exact version, so the
    image serves that number whatever aliases say later.
    """
    return [
        "cellpipe",
        "serve",
        version.ref,
        "--host",
        "0.0.0.0",  # inside the pod: KServe routes to this port
        "--port",
        str(SERVE_PORT),
        "--project",
        PROJECT_IN_IMAGE,
    ]


def image_repository(name: str) -> str:
    """Return the image repository part for a model name: ``model-<lowercase name>``.

    Docker repository components are lowercase letters and digits joined by single ``.``,
    ``_`` or ``-``; model names may have capitals and runs of separators.
    """
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"model-{text or 'x'}"


def pinned_requirements(
    packages: Mapping[str, str], *, cellpipe: str, extra: str = "serve"
) -> tuple[str, ...]:
    """Return the sorted ``NAME==VERSION`` lines for ``packages`` plus ``cellpipe[serve]``.

    ``cellpipe`` itself is pinned at the version given (a recorded ``cellpipe`` among the
    packages is replaced by it: the image needs the server's extra).

    Raises:
        ServingError: a name or version that is not a plain PEP 508 name / PEP 440 version
            (it would be pasted into ``requirements.txt``, where pip reads options too).
    """
    lines: dict[str, str] = {}
    for distribution, version in packages.items():
        base, bracket, _ = distribution.partition("[")
        if not _DISTRIBUTION.fullmatch(base) or (
            bracket and not _EXTRAS.fullmatch(distribution[len(base) :])
        ):
            raise ServingError(
                f"cannot pin the package {distribution!r}: not a distribution name",
                hint="the version's recorded packages must be names like scikit-learn",
            )
        if not _VERSION.fullmatch(str(version)):
            raise ServingError(
                f"cannot pin {distribution} at {version!r}: not a version number",
                hint="the version's recorded packages must map names to versions like 1.5.2",
            )
        if _normalized(base) == "cellpipe":
            continue
        lines[_normalized(base)] = f"{distribution}=={version}"
    if not _VERSION.fullmatch(cellpipe):
        raise ServingError(f"cannot pin cellpipe at {cellpipe!r}: not a version number")
    lines["cellpipe"] = f"cellpipe[{extra}]=={cellpipe}"
    return tuple(sorted(lines.values(), key=str.lower))


def model_context(
    version: ModelVersion,
    *,
    packages: Mapping[str, str],
    cellpipe: str,
    base_image: str,
) -> ImageContext:
    """Return the build context of the image that serves ``version`` with ``cellpipe serve``.

    The files are ``Dockerfile``, ``requirements.txt`` and ``cellpipe-model.json``; the
    caller writes them (`cellpipe.storage.images.write_context`) and exports the version into
    ``project/`` beside them.

    Args:
        version: the version the image serves (its number is kept by the export).
        packages: distribution -> version the model needs to load (its recorded packages).
        cellpipe: the cellpipe version to install (with the ``serve`` extra).
        base_image: the ``FROM`` image (the Python the model was pickled with).

    Raises:
        ServingError: for a package or version that cannot be pinned safely, or a base
            image name with spaces.
    """
    if not re.fullmatch(r"[A-Za-z0-9][^\s]*", base_image):
        raise ServingError(
            f"invalid base image {base_image!r}",
            hint="name an image like python:3.12-slim (no spaces)",
        )
    requirements = pinned_requirements(packages, cellpipe=cellpipe)
    command = serve_command(version)
    description: dict[str, Any] = {
        "model": version.ref,
        "name": version.name,
        "version": version.version,
        "artifact": str(version.artifact.digest),
        "serializer": version.artifact.serializer,
        "type": version.artifact.type_name,
        "command": command,
        "port": SERVE_PORT,
        "requirements": list(requirements),
    }
    files = {
        "Dockerfile": _DOCKERFILE.format(
            ref=version.ref,
            port=SERVE_PORT,
            folder=PROJECT_FOLDER,
            base=base_image,
            uid=_UID,
            root=PROJECT_IN_IMAGE,
            entrypoint=json.dumps(command[:1]),
            cmd=json.dumps(command[1:]),
        ),
        "requirements.txt": "".join(f"{line}\n" for line in requirements),
        MODEL_FILE: json.dumps(description, indent=2, sort_keys=True) + "\n",
    }
    return ImageContext(
        tag=image_tag(image_repository(version.name), files),
        files=files,
        requirements=requirements,
    )
