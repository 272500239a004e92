from __future__ import annotations

import os
import stat

import pytest

from cellpipe.errors import CellpipeError
from cellpipe.kfp.image import build_context, build_image, write_context

pytestmark = pytest.mark.kfp

NOTEBOOK = """
# %% tags=["imports"]
import yaml
# %% tags=["step:a"]
x = yaml.safe_dump({})
"""


def test_tag_follows_content(make_pipeline):
    pipeline = make_pipeline(NOTEBOOK)
    one = build_context(pipeline, kfp_version="2.17.3", base_image="python:3.11-slim")
    two = build_context(pipeline, kfp_version="2.17.3", base_image="python:3.11-slim")
    other = build_context(pipeline, kfp_version="2.17.2", base_image="python:3.11-slim")
    assert one == two
    assert one.tag.startswith("cellpipe-nb:")
    assert len(one.tag.split(":")[1]) == 12
    assert other.tag != one.tag
    assert any(r.startswith("PyYAML==") for r in one.requirements)
    assert "--no-deps 'kfp==2.17.3'" in one.files["Dockerfile"]


def test_build_without_tools_is_a_clear_error(make_pipeline, tmp_path, monkeypatch):
    context = build_context(make_pipeline(NOTEBOOK), kfp_version="2.17.3", base_image="py")
    write_context(context, tmp_path / "ctx")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CellpipeError, match="none of docker, podman or buildah is installed"):
        build_image(context, tmp_path / "ctx")


def test_build_calls_the_first_tool_found(make_pipeline, tmp_path, monkeypatch):
    context = build_context(make_pipeline(NOTEBOOK), kfp_version="2.17.3", base_image="py")
    write_context(context, tmp_path / "ctx")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "args.txt"
    tool = bin_dir / "podman"
    tool.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + "/usr/bin:/bin")
    monkeypatch.setattr("cellpipe.storage.images.BUILD_TOOLS", ("podman", "buildah"))
    argv = build_image(context, tmp_path / "ctx")
    assert argv[1:] == ["build", "-t", context.tag, str(tmp_path / "ctx")]
    assert record.read_text().split() == argv[1:]
