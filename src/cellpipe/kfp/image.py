"""Container images for compiled pipelines: build contexts and their content-derived tags.

Owns: `build_context` (a Dockerfile and the pinned ``requirements.txt`` of every step, plus
kfp's executor installed without its dependencies), `image_tag` (``cellpipe-<pipeline>:<12
hex of the SHA-256 of the files>``, so an image is named by what is in it), `write_context`
and `build_image` (docker, podman or buildah, whichever is installed first).

Invariants: `build_context` is pure and deterministic; only `write_context` and `build_image`
touch the disk or run programs. An image built from a context has every package a step imports
at the version installed where it was compiled, so ``compile --image-from-context`` can switch
installation off in the pods.

Must not depend on: the runner, storage.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cellpipe.errors import CellpipeError
from cellpipe.kfp.dag import pipeline_name
from cellpipe.kfp.executors import requirements
from cellpipe.pipeline.model import Pipeline

BUILD_TOOLS = ("docker", "podman", "buildah")

_DOCKERFILE = """\
# Written by `cellpipe image`; rebuild after changing the notebook's imports.
FROM {base}
COPY requirements.txt /tmp/cellpipe-requirements.txt
RUN python3 -m pip install --no-cache-dir -r /tmp/cellpipe-requirements.txt \\
 && python3 -m pip install --no-cache-dir --no-deps 'kfp=={kfp}'
ENV MPLBACKEND=Agg
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageContext:
    """A build context: its files and the tag its content gives.

    Attributes:
        tag: ``cellpipe-<pipeline>:<digest>``.
        files: file name -> text.
        requirements: the pinned requirements, sorted.
    """

    tag: str
    files: dict[str, str]
    requirements: tuple[str, ...]


def build_context(
    pipeline: Pipeline, *, kfp_version: str, base_image: str, name: str | None = None
) -> ImageContext:
    """Return the build context of an image that runs every step without installing anything.

    Args:
        pipeline: the pipeline.
        kfp_version: the kfp whose executor the image carries.
        base_image: the ``FROM`` image (a Python matching the one that compiled).
        name: the pipeline name used in the tag (the pipeline's own when None).

    Raises:
        CompileError: for a package not installed here (it cannot be pinned).
    """
    pinned = sorted({r for step in pipeline.steps for r in requirements(step)})
    files = {
        "Dockerfile": _DOCKERFILE.format(base=base_image, kfp=kfp_version),
        "requirements.txt": "".join(f"{r}\n" for r in pinned),
    }
    return ImageContext(
        tag=image_tag(pipeline_name(pipeline, name), files),
        files=files,
        requirements=tuple(pinned),
    )


def image_tag(name: str, files: dict[str, str]) -> str:
    """Return ``cellpipe-<name>:<first 12 hex digits of the files' SHA-256>``."""
    digest = hashlib.sha256()
    for file_name in sorted(files):
        digest.update(f"{file_name}\0{files[file_name]}\0".encode())
    return f"cellpipe-{name}:{digest.hexdigest()[:12]}"


def write_context(context: ImageContext, directory: Path) -> list[Path]:
    """Write the context's files into ``directory`` (created if needed); return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in sorted(context.files.items()):
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def find_build_tool() -> str | None:
    """Return the path of the first of docker, podman or buildah on PATH, or None."""
    for tool in BUILD_TOOLS:
        found = shutil.which(tool)
        if found:
            return found
    return None


def build_image(context: ImageContext, directory: Path) -> list[str]:
    """Build the image from a written context and return the command that was run.

    Raises:
        CellpipeError: when no build tool is installed, or the build fails.
    """
    tool = find_build_tool()
    if tool is None:
        raise CellpipeError(
            "cannot build the image: none of docker, podman or buildah is installed",
            hint=f"install one of them, or build {directory} elsewhere with: "
            f"docker build -t {context.tag} {directory}",
        )
    verb = "bud" if Path(tool).name == "buildah" else "build"
    argv = [tool, verb, "-t", context.tag, str(directory)]
    try:
        subprocess.run(argv, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CellpipeError(
            f"building the image {context.tag} failed: {exc}",
            hint="see the build output above",
        ) from exc
    return argv
