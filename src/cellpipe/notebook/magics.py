"""IPython syntax (magics, ``!shell``, ``obj?``) -> plain Python, and ``%pip install`` lines.

Owns: `to_python`, which turns a cell's source into Python that `ast` can parse, with exactly
as many lines as the source so that line numbers map one to one; and `pip_requirements`,
which reads the packages that ``%pip install`` / ``!pip install`` lines ask for.

Invariants: IPython's own `TransformerManager` does the transformation (the same one the
kernel uses), imported lazily and only for cells that look like they contain IPython syntax,
because importing it costs ~80 ms. If IPython cannot transform a cell, the source is returned
unchanged so that the parser reports the syntax error with its line.

Must not depend on: anything in cellpipe.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import cache
from typing import Any

# A line starting with % or !, an assignment from one (``x = !ls``), or a help query (``obj?``).
_MAYBE_MAGIC = re.compile(r"^\s*[%!]|=\s*[%!]|\?\s*$", re.MULTILINE)
_LINE_MAGIC = re.compile(r"^\s*([%!]|[\w.,\s]+=\s*[%!])|\?\s*$")
_PIP = re.compile(
    r"^\s*[%!]\s*(?:pip3?|python3?\s+-m\s+pip|uv\s+pip)\s+install\s+(?P<args>.*)$", re.MULTILINE
)
_REQUIREMENT = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?:==\s*(?P<version>[^,;\s]+))?"
)
_OPTIONS_WITH_VALUE = frozenset(
    {"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-i", "--index-url",
     "--extra-index-url", "-f", "--find-links", "-t", "--target", "--prefix", "--root"}
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class PipRequirement:
    """A package named on a ``%pip install`` line.

    Attributes:
        name: the distribution name as written.
        version: the pinned version (``==``), if any.
        line: 1-based line in the cell.
    """

    name: str
    version: str | None
    line: int


def has_ipython_syntax(source: str) -> bool:
    """Return whether ``source`` may contain magics, shell escapes or help queries."""
    return _MAYBE_MAGIC.search(source) is not None


def to_python(source: str) -> str:
    """Return ``source`` as plain Python with the same number of lines.

    Args:
        source: a cell's text, possibly with IPython syntax.

    Returns:
        Python code where ``%magic`` and ``!cmd`` are ``get_ipython()`` calls.
    """
    if not has_ipython_syntax(source):
        return source
    n_lines = len(source.splitlines()) or 1
    transformed = _transform(source)
    if transformed is None:
        return source
    out_lines = transformed.splitlines()
    if len(out_lines) == n_lines:
        return "\n".join(out_lines)
    if source.lstrip().startswith("%%") and len(out_lines) < n_lines:
        # A cell magic: the whole body is one string argument on the first line.
        return "\n".join(out_lines + ["#"] * (n_lines - len(out_lines)))
    return _line_by_line(source)


def _line_by_line(source: str) -> str:
    # Multi-line constructs (backslash continuations of a magic) change the line count, so
    # transform magic lines one at a time and turn their continuation lines into comments
    # (not empty lines, which would vanish from the line count at the end of a cell).
    out: list[str] = []
    continuing = False
    for line in source.splitlines():
        if continuing:
            out.append("#")
            continuing = line.endswith("\\")
            continue
        if _LINE_MAGIC.search(line):
            continuing = line.endswith("\\")
            text = line.rstrip("\\")
            indent = text[: len(text) - len(text.lstrip())]
            converted = _transform(text.lstrip())
            if converted is not None and len(converted.splitlines()) == 1:
                out.append(indent + converted.strip("\n"))
                continue
        out.append(line)
    return "\n".join(out)


def _transform(source: str) -> str | None:
    try:
        result: str = _manager().transform_cell(source)
    except Exception:  # any IPython failure: leave the code to the parser
        return None
    return result


@cache
def _manager() -> Any:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()  # type: ignore[no-untyped-call]


def pip_requirements(source: str) -> tuple[PipRequirement, ...]:
    """Return the packages that ``%pip install`` / ``!pip install`` lines in ``source`` name.

    Options, paths, URLs and ``$variables`` are ignored; ``-r file`` is not followed.
    """
    if "install" not in source:
        return ()
    joined = source.replace("\\\n", " \n")
    found: list[PipRequirement] = []
    for match in _PIP.finditer(joined):
        line = joined.count("\n", 0, match.start()) + 1
        try:
            words = shlex.split(match["args"], comments=True)
        except ValueError:
            continue
        skip_next = False
        for word in words:
            if skip_next:
                skip_next = False
                continue
            if word.startswith("-"):
                skip_next = word in _OPTIONS_WITH_VALUE
                continue
            if any(c in word for c in "/$@{}") or word.startswith("."):
                continue
            req = _REQUIREMENT.match(word)
            if req is not None:
                found.append(PipRequirement(name=req["name"], version=req["version"], line=line))
    return tuple(found)
