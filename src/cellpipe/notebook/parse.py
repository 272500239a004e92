"""Read a notebook file (``.ipynb`` or a jupytext percent script) into plain cells.

Owns: turning bytes on disk into `NotebookSource`, a list of `Cell` (kind, source, tags) plus
the notebook-level metadata. Nothing here knows what a tag means.

Invariants:
- cell numbers are 1-based and count every cell (code, markdown and raw), as Jupyter shows them;
- ``.ipynb`` must be nbformat v4; a v3 notebook, malformed JSON or a wrong shape raises
  `NotebookParseError` naming the file and what is wrong;
- in a percent script every ``# %%`` line (then a space or the end of the line, as jupytext
  reads it: ``# %%time`` is a commented magic) starts a cell (``# %% [markdown]``, ``[raw]``);
  code before the first marker is a cell unless it is only comments (the jupytext header); when
  it is only a module docstring (as in scikit-learn's gallery scripts) it is a markdown cell;
  magics that jupytext comments out (``# %pip install x``) are uncommented so both formats give
  the same model; percent scripts carry no notebook-level metadata.

The JSON is read with the standard library rather than nbformat: importing nbformat (and its
JSON-schema validator) costs about 0.2 s, a third of the CLI's whole budget, and the checks here
cover everything cellpipe relies on.

Must not depend on: storage, runner, kfp, registry, serving, cli, ui.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cellpipe.errors import NotebookParseError

_EMPTY: Mapping[str, Any] = MappingProxyType({})

CODE = "code"
MARKDOWN = "markdown"
RAW = "raw"


@dataclass(frozen=True, slots=True, kw_only=True)
class Cell:
    """One notebook cell as written.

    Attributes:
        number: 1-based position in the notebook, counting every cell.
        kind: ``code``, ``markdown`` or ``raw``.
        source: the cell's text.
        tags: the cell's metadata tags, as written (not yet checked).
    """

    number: int
    kind: str
    source: str
    tags: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NotebookSource:
    """A notebook file read into cells.

    Attributes:
        path: the file it was read from.
        cells: every cell in order.
        metadata: the notebook-level metadata (empty for percent scripts).
    """

    path: Path
    cells: tuple[Cell, ...]
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


def read_notebook(path: Path) -> NotebookSource:
    """Read ``path`` as a notebook: ``.py`` files as percent scripts, anything else as ``.ipynb``.

    Args:
        path: the notebook file.

    Returns:
        The notebook's cells and metadata.

    Raises:
        NotebookParseError: if the file cannot be read or is not a v4 notebook.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotebookParseError("no such file", path=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise NotebookParseError(f"cannot read the file: {exc}", path=str(path)) from exc
    if path.suffix == ".py":
        return parse_percent(text, path=path)
    return parse_ipynb(text, path=path)


def parse_ipynb(text: str, *, path: Path) -> NotebookSource:
    """Parse the JSON text of an ``.ipynb`` file (nbformat v4).

    Raises:
        NotebookParseError: for malformed JSON, another nbformat version or a wrong shape.
    """
    where = str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookParseError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            path=where,
            hint="open and re-save it in Jupyter, or restore it from version control",
        ) from exc
    except RecursionError as exc:
        raise NotebookParseError("not valid JSON: nested too deeply", path=where) from exc
    if not isinstance(data, dict):
        raise NotebookParseError("not a Jupyter notebook (the JSON is not an object)", path=where)
    version = data.get("nbformat")
    if version is None:
        raise NotebookParseError(
            "not a Jupyter notebook (no 'nbformat' field)",
            path=where,
            hint="percent scripts must end in .py",
        )
    if version != 4:
        raise NotebookParseError(
            f"this is an nbformat v{version} notebook; cellpipe reads nbformat v4",
            path=where,
            hint=f"convert it: jupyter nbconvert --to notebook --nbformat 4 {path.name}",
        )
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise NotebookParseError("the notebook 'metadata' is not an object", path=where)
    raw_cells = data.get("cells")
    if not isinstance(raw_cells, list):
        raise NotebookParseError("the notebook has no 'cells' list", path=where)
    cells = tuple(_ipynb_cell(raw, number, where) for number, raw in enumerate(raw_cells, 1))
    return NotebookSource(path=path, cells=cells, metadata=MappingProxyType(metadata))


def _ipynb_cell(raw: object, number: int, where: str) -> Cell:
    if not isinstance(raw, dict):
        raise NotebookParseError("the cell is not a JSON object", path=where, cell=number)
    kind = raw.get("cell_type")
    if kind not in (CODE, MARKDOWN, RAW):
        raise NotebookParseError(f"unknown cell_type {kind!r}", path=where, cell=number)
    source = raw.get("source", "")
    if isinstance(source, list) and all(isinstance(part, str) for part in source):
        source = "".join(source)
    if not isinstance(source, str):
        raise NotebookParseError(
            "the cell 'source' is not a string or a list of strings", path=where, cell=number
        )
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, dict):
        raise NotebookParseError("the cell 'metadata' is not an object", path=where, cell=number)
    tags = metadata.get("tags", [])
    if not isinstance(tags, list):
        raise NotebookParseError("the cell's 'tags' is not a list", path=where, cell=number)
    return Cell(number=number, kind=kind, source=source, tags=tuple(tags))


# As jupytext: ``# %%`` then a space or the end of the line; ``# %%time`` is a commented magic.
_MARKER = re.compile(r"^#\s?%%(?=\s|$)(?P<rest>.*)$")
_KIND = re.compile(r"\[(?P<kind>markdown|md|raw)\]")
_TAGS = re.compile(r"\btags\s*=\s*(?P<json>\[[^\]]*\])")
_COMMENTED_MAGIC = re.compile(r"^(?P<indent>\s*)#\s?(?P<magic>%%?[A-Za-z_]|![A-Za-z.~/$])")


def parse_percent(text: str, *, path: Path) -> NotebookSource:
    """Parse a jupytext percent script (``# %%`` cell markers).

    Raises:
        NotebookParseError: if a cell marker's ``tags=[...]`` is not a JSON list of strings.
    """
    lines = text.splitlines()
    chunks: list[tuple[str, tuple[object, ...], list[str]]] = []
    header: list[str] = []
    current: list[str] | None = None
    for number_in_file, line in enumerate(lines, 1):
        match = _MARKER.match(line)
        if match is None:
            (header if current is None else current).append(line)
            continue
        rest = match["rest"]
        kind_match = _KIND.search(rest)
        kind = CODE
        if kind_match is not None:
            kind = RAW if kind_match["kind"] == RAW else MARKDOWN
        tags: tuple[object, ...] = ()
        tags_match = _TAGS.search(rest)
        if tags_match is not None:
            tags = _percent_tags(tags_match["json"], path, number_in_file)
        elif re.search(r"\btags\s*=", rest):
            raise NotebookParseError(
                f"the cell marker's tags are not a JSON list: {line.strip()}",
                path=f"{path}, line {number_in_file}",
                hint='write them like # %% tags=["step:train"]',
            )
        current = []
        chunks.append((kind, tags, current))
    cells: list[Cell] = []
    if any(line.strip() and not line.lstrip().startswith("#") for line in header):
        kind = MARKDOWN if _only_docstring("\n".join(header)) else CODE
        cells.append(Cell(number=1, kind=kind, source=_cell_text(header, kind)))
    for kind, tags, body in chunks:
        cells.append(
            Cell(number=len(cells) + 1, kind=kind, source=_cell_text(body, kind), tags=tags)
        )
    return NotebookSource(path=path, cells=tuple(cells))


def _only_docstring(text: str) -> bool:
    try:
        body = ast.parse(text).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return (
        len(body) == 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )


def _percent_tags(text: str, path: Path, line: int) -> tuple[object, ...]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookParseError(
            f"the cell marker's tags are not a JSON list: {text}",
            path=f"{path}, line {line}",
            hint='write them like # %% tags=["step:train"]',
        ) from exc
    if not isinstance(value, list):
        raise NotebookParseError("tags must be a list", path=f"{path}, line {line}")
    return tuple(value)


def _cell_text(lines: list[str], kind: str) -> str:
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    body = lines[:end]
    if kind == CODE:
        body = [_COMMENTED_MAGIC.sub(r"\g<indent>\g<magic>", line) for line in body]
    return "\n".join(body)
