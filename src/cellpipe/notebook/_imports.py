"""Which module-level names a block binds by import, and from where: re-imports are not shadows.

Owns: `ImportBindings` (name -> what the block's imports bind it to) and `same_import`, which
tells whether a step's binding of a name the imports/functions cells define is only a re-import
of the same thing (``import numpy as np`` in both): then the step's name holds the very object
every step already sees, and the ``shadows-shared-name`` warning would be noise.

Rules: ``import a.b`` binds ``a`` to module ``a``; ``import a.b as c`` binds ``c`` to module
``a.b``; ``from a import b [as c]`` binds ``b`` (``c``) to ``a:b`` (relative imports keep their
dots). Any other module-level binding of the name (assignment, ``for``/``with``/``except``
target, ``def``, ``class``, walrus, ``del``), also one in a comprehension (counted to be safe),
makes the name's source unknown, and an unknown source is never the same. Function and class
bodies are not module level. Code that does not parse binds nothing here (the analysis reports
it).

Must not depend on: anything in cellpipe.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_Bind = Callable[[str, "str | None"], None]


@dataclass(frozen=True, slots=True)
class ImportBindings:
    """The module-level names a block binds, with the import each stands for.

    Attributes:
        sources: name -> ``"numpy"`` / ``"sklearn.model_selection:train_test_split"`` when every
            binding of the name in the block is that same import; None when any binding is
            something else (or two imports disagree).
    """

    sources: Mapping[str, str | None]

    @classmethod
    def from_code(cls, codes: Iterable[str]) -> ImportBindings:
        """Collect the bindings of a block's cells (their plain Python, in order)."""
        found: dict[str, str | None] = {}

        def bind(name: str, source: str | None) -> None:
            if name in found and found[name] != source:
                found[name] = None
            else:
                found[name] = source

        for code in codes:
            try:
                tree = ast.parse(code)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
            _walk(tree, bind)
        return cls(MappingProxyType(found))


def _walk(node: ast.AST, bind: _Bind) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            for alias in child.names:
                if alias.asname:
                    bind(alias.asname, alias.name)
                else:
                    top = alias.name.split(".")[0]
                    bind(top, top)
        elif isinstance(child, ast.ImportFrom):
            module = "." * child.level + (child.module or "")
            for alias in child.names:
                if alias.name != "*":
                    bind(alias.asname or alias.name, f"{module}:{alias.name}")
        elif isinstance(child, _SCOPES):
            if not isinstance(child, ast.Lambda):
                bind(child.name, None)
                for deco in child.decorator_list:
                    _walk(deco, bind)
        elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store | ast.Del):
            bind(child.id, None)
        else:
            name = _pattern_name(child)
            if name:
                bind(name, None)
            _walk(child, bind)


def _pattern_name(node: ast.AST) -> str | None:
    # `except E as name`, `case x`, `case [*rest]`, `case {**rest}`
    if isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar):
        return node.name
    if isinstance(node, ast.MatchMapping):
        return node.rest
    return None


def same_import(name: str, shared: ImportBindings, step: ImportBindings) -> bool:
    """Return whether the step binds ``name`` only by re-importing what the shared cells bind.

    Args:
        name: a module-level name both the step and the imports/functions cells bind.
        shared: the bindings of the imports and functions cells.
        step: the bindings of the step's cells.

    Returns:
        True when both bind ``name`` only to the same import (no warning is needed).
    """
    source = step.sources.get(name)
    return source is not None and shared.sources.get(name) == source
