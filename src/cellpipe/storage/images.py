"""Container build contexts on disk: their content-derived tags, writing and building them.

Owns: `ImageContext` (the text files of a build context, its tag and pinned requirements),
`image_tag` (``cellpipe-<name>:<12 hex of the SHA-256 of the files>``, so an image is named
by what is in it), `write_context`, `find_build_tool` and `build_image` (docker, podman or
buildah, whichever is installed first). Both kinds of image cellpipe writes use these: the
compiled pipeline's steps (`cellpipe.kfp.image`) and a served model version
(`cellpipe.serving.image`).

Invariants: `image_tag` is a pure function of the files; only `write_context` and
`build_image` touch the disk or run programs; the build runs with an argument list, never a
shell string.

Must not depend on: the runner, notebooks, kfp, serving.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cellpipe.errors import CellpipeError

__all__ = [
    "BUILD_TOOLS",
    "ImageContext",
    "build_image",
    "find_build_tool",
    "image_tag",
    "write_context",
]

BUILD_TOOLS = ("docker", "podman", "buildah")


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageContext:
    """A build context: its files and the tag its content gives.

    Attributes:
        tag: ``cellpipe-<name>:<digest>``.
        files: file name -> text.
        requirements: the pinned requirements, sorted.
    """

    tag: str
    files: dict[str, str]
    requirements: tuple[str, ...]


def image_tag(name: str, files: Mapping[str, str]) -> str:
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
