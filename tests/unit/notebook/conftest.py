"""Factories that write small notebooks for the notebook tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

CellSpec = tuple[Any, str]
"""(tags, source): tags is a list of strings, one string, or "" for none; a tags value of
``"#markdown"`` or ``"#raw"`` makes a markdown or raw cell."""


def _tags(tags: Any) -> list[Any]:
    if isinstance(tags, str):
        return [tags] if tags else []
    return list(tags)


def notebook_json(cells: Sequence[CellSpec], metadata: dict[str, Any] | None = None) -> str:
    nb_cells = []
    for tags, source in cells:
        if tags in ("#markdown", "#raw"):
            nb_cells.append({"cell_type": tags[1:], "metadata": {}, "source": source})
            continue
        nb_cells.append(
            {
                "cell_type": "code",
                "execution_count": None,
                "metadata": {"tags": _tags(tags)},
                "outputs": [],
                "source": source.splitlines(keepends=True),
            }
        )
    return json.dumps(
        {"nbformat": 4, "nbformat_minor": 5, "metadata": metadata or {}, "cells": nb_cells}
    )


def percent_text(cells: Sequence[CellSpec]) -> str:
    parts = ["# ---\n# jupyter:\n#   kernelspec:\n#     name: python3\n# ---\n"]
    for tags, source in cells:
        if tags == "#markdown":
            body = "\n".join(f"# {line}" for line in source.splitlines())
            parts.append(f"# %% [markdown]\n{body}\n")
            continue
        if tags == "#raw":
            parts.append(f"# %% [raw]\n{source}\n")
            continue
        header = "# %%"
        if _tags(tags):
            header += " tags=" + json.dumps(_tags(tags))
        parts.append(f"{header}\n{source}\n")
    return "\n".join(parts)


MakeNotebook = Callable[..., Path]


@pytest.fixture
def make_notebook(tmp_path: Path) -> MakeNotebook:
    """Write cells to an .ipynb (or, with ``percent=True``, a percent .py) and return the path."""
    counter = iter(range(10_000))

    def make(
        cells: Sequence[CellSpec],
        *,
        metadata: dict[str, Any] | None = None,
        percent: bool = False,
        name: str | None = None,
    ) -> Path:
        stem = name or f"nb{next(counter)}"
        if percent:
            path = tmp_path / f"{stem}.py"
            path.write_text(percent_text(cells), encoding="utf-8")
        else:
            path = tmp_path / f"{stem}.ipynb"
            path.write_text(notebook_json(cells, metadata), encoding="utf-8")
        return path

    return make
