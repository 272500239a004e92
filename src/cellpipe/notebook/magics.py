"""IPython syntax (magics, ``!shell``, ``obj?``) -> plain Python, and ``%pip install`` lines.

Owns: `to_python`, which turns a cell's source into Python that `ast` can parse, with exactly
as many lines as the source so that line numbers map one to one; `pip_requirements`, which
reads the packages that ``%pip install`` / ``!pip install`` lines ask for; and
`repeating_magics`, the lines whose code ``%%timeit`` / ``%timeit`` runs many times.

Magics whose body is Python (`PYTHON_BODY_CELL_MAGICS`: ``%%time``, ``%%timeit``,
``%%capture``, ``%%prun``; the line magics ``%time``/``%timeit``/``%prun STATEMENT``) would
hide that code from the analysis inside a string argument. For them the Python is the magic
call as IPython makes it, as the iterable of a loop that never runs, with the body (itself
transformed) as the loop's body, one space deeper::

    %%capture out         ->      for out in (get_ipython().run_cell_magic('capture', 'out', ...
    x = f()                        x = f()

(the call stays on the first line). When run, the magic runs the body exactly as in Jupyter
(timed, profiled, captured into ``out``, repeated) in the user namespace, and the loop body
never runs; the analysis sees the body's reads, binds and mutations, and the names the magic
binds itself (``%%capture out`` binds ``out``) as the loop target. The only difference from
Jupyter: the value of a trailing expression under ``%%time`` is not shown. ``%%timeit`` keeps
the names its body assigns local to the timing loop (in Jupyter too) while the analysis counts
them as assigned, so the runner's missing-output check catches a later use; the caller warns
that its effects run repeatedly (`repeating_magics`). Other cell magics (``%%bash``,
``%%writefile``, ...) stay one opaque call.

Invariants: IPython's own `TransformerManager` does the transformation (the same one the
kernel uses), imported lazily and only for cells that look like they contain IPython syntax,
because importing it costs ~80 ms. If IPython cannot transform a cell, the source is returned
unchanged so that the parser reports the syntax error with its line. A Python cell magic whose
body does not parse keeps the body form, so the syntax error is reported at its line; when only
the form does not parse (``from __future__`` in the body), the plain transformation is used.

Must not depend on: anything in cellpipe.
"""

from __future__ import annotations

import ast
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


PYTHON_BODY_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun"})
"""Cell magics that run their body as Python in the user namespace (its effects are kept)."""

PYTHON_STATEMENT_LINE_MAGICS = frozenset({"time", "timeit", "prun"})
"""Line magics whose argument is a Python statement run in the user namespace."""

REPEATING_MAGICS = frozenset({"timeit"})
"""Magics that run their code many times."""

_CELL_MAGIC = re.compile(r"%%(?P<name>[A-Za-z_][\w.]*)(?P<args>.*)")
_STATEMENT_MAGIC = re.compile(r"^(?P<indent>\s*)%(?P<name>time|timeit|prun)\s+(?P<stmt>[^-\s].*)$")
_LINE_MAGIC_NAME = re.compile(r"^\s*(?:[\w.,\s]+=\s*)?%(?P<name>[A-Za-z_]\w*)")
_MAGIC_CALL_LINE = re.compile(r"^\s*get_ipython\(\)\.run_line_magic\((?P<args>.*)\)\s*$")
_SIMPLE_STATEMENTS = (
    ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete, ast.Pass, ast.Import,
    ast.ImportFrom, ast.Global, ast.Nonlocal, ast.Assert, ast.Raise,
)  # fmt: skip


def cell_magic(source: str) -> tuple[str, str] | None:
    """Return ``(name, arguments)`` of the cell magic that starts ``source``, if any."""
    for line in source.splitlines():
        if not line.strip():
            continue
        match = _CELL_MAGIC.fullmatch(line.strip())
        return None if match is None else (match["name"], match["args"].strip())
    return None


def repeating_magics(source: str) -> tuple[int, ...]:
    """Return the 1-based lines of ``source`` whose code a magic runs many times (``timeit``)."""
    if "timeit" not in source:
        return ()
    found = []
    magic = cell_magic(source)
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if magic is not None and magic[0] in REPEATING_MAGICS and stripped.startswith("%%"):
            found.append(number)
            magic = None
            continue
        match = _LINE_MAGIC_NAME.match(line)
        if match is not None and match["name"] in REPEATING_MAGICS:
            found.append(number)
    return tuple(found)


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
    magic = cell_magic(source)
    if magic is not None and len(out_lines) < n_lines + 1:
        if magic[0] in PYTHON_BODY_CELL_MAGICS and len(out_lines) == 1:
            exposed = _python_body(source, out_lines[0], magic)
            if exposed is not None:
                return exposed
        # Other cell magics: the whole body is one string argument on the first line.
        lines = source.splitlines()
        lead = next(i for i, line in enumerate(lines) if line.strip())
        return "\n".join(["#"] * lead + out_lines + ["#"] * (n_lines - lead - len(out_lines)))
    if len(out_lines) == n_lines:
        return _expose_statements(source.splitlines(), out_lines)
    return _expose_statements(source.splitlines(), _line_by_line(source).splitlines())


def _python_body(source: str, call: str, magic: tuple[str, str]) -> str | None:
    lines = source.splitlines()
    lead = next(i for i, line in enumerate(lines) if line.strip())
    body = "\n".join(lines[lead + 1 :])
    body_python = to_python(body).splitlines() if body.strip() else []
    target = "[]"
    if magic[0] == "capture":
        target = _capture_target(magic[1]) or target
    head = f"for {target} in ({call.strip()},)[:0]:"
    if not any(line.strip() and not line.lstrip().startswith("#") for line in body_python):
        head += " pass"
    out = ["#"] * lead + [head] + [f" {line}" if line.strip() else "#" for line in body_python]
    out += ["#"] * (len(lines) - len(out))
    python = "\n".join(out)
    if _parses(python):
        return python
    # A body that does not parse on its own is the user's syntax error: keep the body form so
    # that the analysis reports it at its line. Otherwise the form itself is at fault.
    return None if _parses("\n".join(body_python)) else python


def _parses(code: str) -> bool:
    # A full compile, not only ast.parse: `from __future__` after other code, for instance,
    # parses but does not compile.
    try:
        compile(code, "<cell>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _capture_target(args: str) -> str | None:
    try:
        words = shlex.split(args)
    except ValueError:
        return None
    names = [w for w in words if not w.startswith("-")]
    if names and names[0].isidentifier():
        return names[0]
    return None


def _expose_statements(source: list[str], python: list[str]) -> str:
    # `%time x = f()` -> `for [] in (get_ipython().run_line_magic('time', 'x = f()'),)[:0]: x = f()`
    out = list(python)
    for i, (line, converted) in enumerate(zip(source, python, strict=False)):
        match = _STATEMENT_MAGIC.match(line)
        if match is None or _MAGIC_CALL_LINE.match(converted) is None:
            continue
        stmt = match["stmt"].strip()
        if has_ipython_syntax(stmt):
            continue
        try:
            tree = ast.parse(stmt)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if len(tree.body) != 1 or not isinstance(tree.body[0], _SIMPLE_STATEMENTS):
            continue
        out[i] = f"{match['indent']}for [] in ({converted.strip()},)[:0]: {stmt}"
    return "\n".join(out)


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
