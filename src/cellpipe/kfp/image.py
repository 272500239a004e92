"""Container images for compiled pipelines: their build contexts.

Owns: `build_context` (a Dockerfile and the pinned ``requirements.txt`` of every step, plus
kfp's executor installed without its dependencies). The tag (``cellpipe-<pipeline>:<12 hex of
the SHA-256 of the files>``), writing and building are `cellpipe.storage.images`' (shared with
the model-serving image), re-exported here.

Invariants: `build_context` is pure and deterministic. An image built from a context has every
package a step imports at the version installed where it was compiled, so
``compile --image-from-context`` can switch installation off in the pods.

Must not depend on: the runner, the artifact and metadata stores.
"""

from __future__ import annotations

from cellpipe.kfp.dag import pipeline_name
from cellpipe.kfp.executors import requirements
from cellpipe.pipeline.model import Pipeline
from cellpipe.storage.images import (
    BUILD_TOOLS,
    ImageContext,
    build_image,
    find_build_tool,
    image_tag,
    write_context,
)

__all__ = [
    "BUILD_TOOLS",
    "ImageContext",
    "build_context",
    "build_image",
    "find_build_tool",
    "image_tag",
    "write_context",
]

_DOCKERFILE = """\
# Written by `cellpipe image`; rebuild after changing the notebook's imports.
FROM {base}
COPY requirements.txt /tmp/cellpipe-requirements.txt
RUN python3 -m pip install --no-cache-dir -r /tmp/cellpipe-requirements.txt \\
 && python3 -m pip install --no-cache-dir --no-deps 'kfp=={kfp}'
ENV MPLBACKEND=Agg
"""


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
