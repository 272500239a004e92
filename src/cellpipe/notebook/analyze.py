"""Static analysis of the Python code of one block (a step, or the imports and functions cells).

Owns: `BlockFacts`, which accumulates over a block's cells, in order, what the code reads,
binds, may mutate and deletes at module level, what its nested functions read later, the
modules it imports and the ``global`` names its functions assign.

Rules (each fact is kept with the cell and line where it first occurs):
- a *read* is a name loaded at module level while not definitely bound earlier in the block;
  ``if`` without ``else`` does not bind definitely; loop, ``with`` and ``try`` bodies are
  assumed to run (otherwise every loop variable would become a data edge);
- a *bind* is an assignment target, ``for``/``with``/``except`` target, import, ``def``,
  ``class`` or walrus (also inside comprehensions) at module level;
- a *mutation* is ``x.attr = v``, ``x[k] = v``, ``x += v`` (also a read and a bind),
  ``del x[k]``/``del x.attr``, a method call ``x.m(...)`` unless ``m`` is in
  `READ_ONLY_METHODS`, and any call with ``inplace=True``; the root name of the chain counts;
- ``del x`` at module level is a *delete*;
- comprehensions, lambdas, functions and classes have their own scopes; free names of
  function and lambda bodies are *deferred* reads (they run when called), and so are the
  mutations they make to free names; class bodies run at once, so their free names are reads;
- ``global g`` plus an assignment to ``g`` in a function is a *global write*;
- star imports are recorded (their names cannot be tracked);
- a cell that does not parse is recorded as a syntax error with its line; one nested too deeply
  to analyse is recorded the same way. Nothing here raises on user code.

Must not depend on: anything in cellpipe.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field

Loc = tuple[int, int]
"""(cell, line): where a fact occurs, both 1-based."""

READ_ONLY_METHODS = frozenset(
    {
        "head", "tail", "describe", "info", "copy", "deepcopy", "get", "keys", "values", "items",
        "count", "index", "find", "rfind", "mean", "sum", "min", "max", "std", "var", "median",
        "mode", "quantile", "prod", "cumsum", "cumprod", "diff", "shift", "pct_change", "round",
        "abs", "clip", "any", "all", "argmax", "argmin", "argsort", "nonzero", "where", "isin",
        "between", "dot", "flatten", "ravel", "squeeze", "transpose", "item", "tolist", "to_list",
        "to_numpy", "numpy", "to_dict", "to_json", "to_csv", "to_parquet", "to_pickle",
        "to_string", "to_frame", "to_records", "to_markdown", "to_html", "to_latex", "to_excel",
        "astype", "reshape", "view", "format", "format_map", "startswith", "endswith", "join",
        "split", "rsplit", "splitlines", "strip", "lstrip", "rstrip", "lower", "upper", "title",
        "capitalize", "casefold", "zfill", "partition", "rpartition", "replace", "encode",
        "decode", "isdigit", "isalpha", "isalnum", "isnumeric", "isspace", "isupper", "islower",
        "isidentifier", "isnull", "isna", "notna", "notnull", "groupby", "agg", "aggregate",
        "apply", "applymap", "map", "merge", "drop", "dropna", "fillna", "rename", "sort_values",
        "sort_index", "reset_index", "set_index", "query", "filter", "select_dtypes", "sample",
        "nunique", "unique", "value_counts", "corr", "cov", "rolling", "expanding", "resample",
        "pivot", "pivot_table", "melt", "stack", "unstack", "explode", "duplicated",
        "drop_duplicates", "memory_usage", "equals", "nlargest", "nsmallest", "idxmax", "idxmin",
        "first", "last", "plot", "hist", "boxplot", "predict", "predict_proba",
        "predict_log_proba", "decision_function", "score", "score_samples", "transform",
        "inverse_transform", "get_params", "get_feature_names_out", "hexdigest", "digest", "hex",
        "exists", "is_file", "is_dir", "read_text", "read_bytes", "iterdir", "glob", "rglob",
        "with_suffix", "with_name", "relative_to", "resolve", "isoformat", "strftime", "issubset",
        "issuperset", "isdisjoint", "union", "intersection", "difference", "symmetric_difference",
        "savefig", "show", "summary",
    }
)  # fmt: skip

_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionFacts:
    """What calling a module-level function (or class) may do.

    Attributes:
        reads: free names it reads (globals), first location each.
        writes: globals it assigns (``global g; g = ...``).
        mutates: free names it may mutate.
    """

    reads: Mapping[str, Loc]
    writes: Mapping[str, Loc]
    mutates: Mapping[str, Loc]


@dataclass(slots=True, kw_only=True)
class BlockFacts:
    """Facts about a block of cells that run in order in one namespace.

    Feed cells with `add_cell`; see the module docstring for what each field means.
    """

    reads: dict[str, Loc] = field(default_factory=dict)
    deferred: dict[str, Loc] = field(default_factory=dict)
    binds: dict[str, Loc] = field(default_factory=dict)
    mutates: dict[str, Loc] = field(default_factory=dict)
    deletes: dict[str, Loc] = field(default_factory=dict)
    global_writes: dict[str, Loc] = field(default_factory=dict)
    imports: dict[str, Loc] = field(default_factory=dict)
    star_imports: list[Loc] = field(default_factory=list)
    functions: dict[str, FunctionFacts] = field(default_factory=dict)
    bound: set[str] = field(default_factory=set)
    syntax_errors: list[tuple[Loc, str]] = field(default_factory=list)

    def add_cell(self, cell: int, python: str) -> ast.Module | None:
        """Analyse one cell's Python code as the continuation of this block.

        Args:
            cell: the 1-based cell number, recorded with every fact.
            python: the cell's code as plain Python.

        Returns:
            The parsed module, or None if the code does not parse.
        """
        try:
            tree = ast.parse(python)
        except SyntaxError as exc:
            self.syntax_errors.append(((cell, exc.lineno or 1), exc.msg))
            return None
        except (ValueError, RecursionError, MemoryError) as exc:
            self.syntax_errors.append(((cell, 1), f"cannot parse: {exc}"))
            return None
        saved = set(self.bound)
        try:
            _ModuleVisitor(self, cell).block(tree.body)
        except RecursionError:
            self.bound = saved
            self.syntax_errors.append(((cell, 1), "the code is nested too deeply to analyse"))
            return None
        return tree

    @property
    def deleted_at_end(self) -> set[str]:
        """Names deleted at module level and not bound again afterwards."""
        return {name for name in self.deletes if name not in self.bound}


def _root(node: ast.expr) -> ast.Name | None:
    while True:
        if isinstance(node, ast.Name):
            return node
        if isinstance(node, ast.Attribute | ast.Subscript | ast.Starred):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return None


def _arg_names(args: ast.arguments) -> list[str]:
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if args.vararg:
        names.append(args.vararg.arg)
    if args.kwarg:
        names.append(args.kwarg.arg)
    return names


class _Scope:
    """Name usage of one scope; nested scopes are summarised and merged in."""

    __slots__ = (
        "cell",
        "declared",
        "deferred",
        "global_writes",
        "imports",
        "kind",
        "loads",
        "mutations",
        "stars",
        "stores",
        "walrus",
    )

    def __init__(self, kind: str, cell: int) -> None:
        self.kind = kind  # "expr" (module level), "function", "class" or "comp"
        self.cell = cell
        self.loads: dict[str, Loc] = {}
        self.deferred: dict[str, Loc] = {}
        self.stores: dict[str, Loc] = {}
        self.declared: set[str] = set()  # global and nonlocal declarations
        self.mutations: dict[str, Loc] = {}
        self.global_writes: dict[str, Loc] = {}
        self.imports: dict[str, Loc] = {}
        self.stars: list[Loc] = []
        self.walrus: dict[str, Loc] = {}

    def loc(self, node: ast.AST) -> Loc:
        return (self.cell, getattr(node, "lineno", 1))

    def visit(self, node: ast.AST) -> None:
        kind = type(node)
        if kind is ast.Name:
            assert isinstance(node, ast.Name)
            if isinstance(node.ctx, ast.Load):
                self.loads.setdefault(node.id, self.loc(node))
            else:
                self.stores.setdefault(node.id, self.loc(node))
        elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef or kind is ast.Lambda:
            self.function(node)  # type: ignore[arg-type]
        elif kind is ast.ClassDef:
            self.klass(node)  # type: ignore[arg-type]
        elif kind in _COMPREHENSIONS:
            self.comprehension(node)  # type: ignore[arg-type]
        elif kind is ast.NamedExpr:
            assert isinstance(node, ast.NamedExpr)
            self.visit(node.value)
            target = self.walrus if self.kind == "comp" else self.stores
            target.setdefault(node.target.id, self.loc(node))
        elif kind is ast.Global or kind is ast.Nonlocal:
            self.declared.update(node.names)  # type: ignore[attr-defined]
        elif kind is ast.Import or kind is ast.ImportFrom:
            self.import_(node)  # type: ignore[arg-type]
        elif kind is ast.AugAssign:
            assert isinstance(node, ast.AugAssign)
            self.visit(node.value)
            if isinstance(node.target, ast.Name):
                name = node.target.id
                self.loads.setdefault(name, self.loc(node))
                self.stores.setdefault(name, self.loc(node))
                self.mutations.setdefault(name, self.loc(node))
            else:
                self.visit(node.target)
        elif kind is ast.Attribute or kind is ast.Subscript:
            if not isinstance(node.ctx, ast.Load):  # type: ignore[attr-defined]
                root = _root(node)  # type: ignore[arg-type]
                if root is not None:
                    self.mutations.setdefault(root.id, self.loc(node))
            for child in ast.iter_child_nodes(node):
                self.visit(child)
        elif kind is ast.Call:
            assert isinstance(node, ast.Call)
            self.call(node)
        elif kind is ast.ExceptHandler:
            assert isinstance(node, ast.ExceptHandler)
            if node.name:
                self.stores.setdefault(node.name, self.loc(node))
            for child in ast.iter_child_nodes(node):
                self.visit(child)
        elif kind is ast.MatchAs or kind is ast.MatchStar or kind is ast.MatchMapping:
            bound = getattr(node, "name", None) or getattr(node, "rest", None)
            if isinstance(bound, str):
                self.stores.setdefault(bound, self.loc(node))
            for child in ast.iter_child_nodes(node):
                self.visit(child)
        else:
            for child in ast.iter_child_nodes(node):
                self.visit(child)

    def call(self, node: ast.Call) -> None:
        func = node.func
        mutating = isinstance(func, ast.Attribute) and func.attr not in READ_ONLY_METHODS
        if any(
            k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        ):
            mutating = True
        if mutating and isinstance(func, ast.Attribute):
            root = _root(func.value)
            if root is not None:
                self.mutations.setdefault(root.id, self.loc(node))
        for child in ast.iter_child_nodes(node):
            self.visit(child)

    def import_(self, node: ast.Import | ast.ImportFrom) -> None:
        loc = self.loc(node)
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                self.imports.setdefault(top, loc)
                self.stores.setdefault(alias.asname or top, loc)
            return
        if node.level == 0 and node.module:
            self.imports.setdefault(node.module.split(".")[0], loc)
        for alias in node.names:
            if alias.name == "*":
                self.stars.append(loc)
            else:
                self.stores.setdefault(alias.asname or alias.name, loc)

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> FunctionFacts:
        args = node.args
        for default in (*args.defaults, *(d for d in args.kw_defaults if d is not None)):
            self.visit(default)
        child = _Scope("function", self.cell)
        if not isinstance(node, ast.Lambda):
            for decorator in node.decorator_list:
                self.visit(decorator)
            for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
                if arg is not None and arg.annotation is not None:
                    self.visit(arg.annotation)
            if node.returns is not None:
                self.visit(node.returns)
            self.stores.setdefault(node.name, self.loc(node))
            for stmt in node.body:
                child.visit(stmt)
        else:
            child.visit(node.body)
        for name in _arg_names(args):
            child.stores.setdefault(name, self.loc(node))
        local = child.stores.keys() - child.declared
        free = {n: loc for n, loc in child.loads.items() if n not in local}
        for n, loc in child.deferred.items():
            if n not in local:
                free.setdefault(n, loc)
        mutates = {n: loc for n, loc in child.mutations.items() if n not in local}
        writes = dict(child.global_writes)
        for n, loc in child.stores.items():
            if n in child.declared:
                writes.setdefault(n, loc)
        for n, loc in free.items():
            self.deferred.setdefault(n, loc)
        self._merge_effects(child, mutates, writes)
        return FunctionFacts(reads=free, writes=writes, mutates=mutates)

    def klass(self, node: ast.ClassDef) -> FunctionFacts:
        for child_node in (*node.decorator_list, *node.bases, *node.keywords):
            self.visit(child_node)
        self.stores.setdefault(node.name, self.loc(node))
        child = _Scope("class", self.cell)
        for stmt in node.body:
            child.visit(stmt)
        local = child.stores.keys() - child.declared
        immediate = {n: loc for n, loc in child.loads.items() if n not in local}
        for n, loc in immediate.items():
            self.loads.setdefault(n, loc)
        for n, loc in child.deferred.items():
            self.deferred.setdefault(n, loc)
        mutates = {n: loc for n, loc in child.mutations.items() if n not in local}
        writes = dict(child.global_writes)
        self._merge_effects(child, mutates, writes)
        reads = dict(immediate)
        for n, loc in child.deferred.items():
            reads.setdefault(n, loc)
        return FunctionFacts(reads=reads, writes=writes, mutates=mutates)

    def comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> None:
        child = _Scope("comp", self.cell)
        for i, gen in enumerate(node.generators):
            (self if i == 0 else child).visit(gen.iter)
            child.visit(gen.target)
            for cond in gen.ifs:
                child.visit(cond)
        if isinstance(node, ast.DictComp):
            child.visit(node.key)
            child.visit(node.value)
        else:
            child.visit(node.elt)
        local = child.stores.keys()
        for n, loc in child.loads.items():
            if n not in local:
                self.loads.setdefault(n, loc)
        for n, loc in child.deferred.items():
            if n not in local:
                self.deferred.setdefault(n, loc)
        walrus = self.walrus if self.kind == "comp" else self.stores
        for n, loc in child.walrus.items():
            walrus.setdefault(n, loc)
        mutates = {n: loc for n, loc in child.mutations.items() if n not in local}
        self._merge_effects(child, mutates, child.global_writes)

    def _merge_effects(
        self, child: _Scope, mutates: Mapping[str, Loc], writes: Mapping[str, Loc]
    ) -> None:
        for n, loc in mutates.items():
            self.mutations.setdefault(n, loc)
        for n, loc in writes.items():
            self.global_writes.setdefault(n, loc)
        for n, loc in child.imports.items():
            self.imports.setdefault(n, loc)
        self.stars.extend(child.stars)


class _ModuleVisitor:
    """Flow-sensitive walk over module-level statements, feeding a `BlockFacts`."""

    __slots__ = ("cell", "facts")

    def __init__(self, facts: BlockFacts, cell: int) -> None:
        self.facts = facts
        self.cell = cell

    def block(self, body: list[ast.stmt]) -> None:
        for node in body:
            self.stmt(node)

    def read(self, name: str, loc: Loc) -> None:
        if name not in self.facts.bound:
            self.facts.reads.setdefault(name, loc)

    def bind(self, name: str, loc: Loc) -> None:
        self.facts.binds.setdefault(name, loc)
        self.facts.bound.add(name)

    def apply(self, scope: _Scope) -> None:
        facts = self.facts
        for name, loc in scope.loads.items():
            self.read(name, loc)
        for name, loc in scope.deferred.items():
            facts.deferred.setdefault(name, loc)
        for name, loc in scope.mutations.items():
            facts.mutates.setdefault(name, loc)
        for name, loc in scope.global_writes.items():
            facts.global_writes.setdefault(name, loc)
        for name, loc in scope.imports.items():
            facts.imports.setdefault(name, loc)
        facts.star_imports.extend(scope.stars)
        for name, loc in scope.stores.items():
            self.bind(name, loc)

    def expr(self, node: ast.AST) -> None:
        scope = _Scope("expr", self.cell)
        scope.visit(node)
        self.apply(scope)

    def target(self, node: ast.expr) -> None:
        if isinstance(node, ast.Name):
            self.bind(node.id, (self.cell, node.lineno))
        elif isinstance(node, ast.Tuple | ast.List):
            for elt in node.elts:
                self.target(elt)
        elif isinstance(node, ast.Starred):
            self.target(node.value)
        else:
            self.expr(node)

    def stmt(self, node: ast.stmt) -> None:
        facts = self.facts
        loc = (self.cell, node.lineno)
        if isinstance(node, ast.Assign):
            self.expr(node.value)
            for target in node.targets:
                self.target(target)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self.expr(node.value)
            self.expr(node.annotation)
            if node.value is not None or not isinstance(node.target, ast.Name):
                self.target(node.target)
        elif isinstance(node, ast.AugAssign):
            self.expr(node.value)
            if isinstance(node.target, ast.Name):
                name = node.target.id
                self.read(name, loc)
                facts.mutates.setdefault(name, loc)
                self.bind(name, loc)
            else:
                self.expr(node.target)
        elif isinstance(node, ast.For | ast.AsyncFor):
            self.expr(node.iter)
            self.target(node.target)
            self.block(node.body)
            self.block(node.orelse)
        elif isinstance(node, ast.While):
            self.expr(node.test)
            self.block(node.body)
            self.block(node.orelse)
        elif isinstance(node, ast.If):
            self.expr(node.test)
            saved = set(facts.bound)
            self.block(node.body)
            after_body = facts.bound
            facts.bound = saved
            self.block(node.orelse)
            facts.bound = after_body & facts.bound
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                self.expr(item.context_expr)
                if item.optional_vars is not None:
                    self.target(item.optional_vars)
            self.block(node.body)
        elif isinstance(node, ast.Try | ast.TryStar):
            saved = set(facts.bound)
            self.block(node.body)
            self.block(node.orelse)
            after = facts.bound
            for handler in node.handlers:
                facts.bound = set(saved)
                if handler.type is not None:
                    self.expr(handler.type)
                if handler.name:
                    self.bind(handler.name, (self.cell, handler.lineno))
                self.block(handler.body)
            facts.bound = after
            self.block(node.finalbody)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope = _Scope("expr", self.cell)
            summary = scope.klass(node) if isinstance(node, ast.ClassDef) else scope.function(node)
            self.apply(scope)
            facts.functions[node.name] = summary
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.read(target.id, loc)
                    facts.deletes[target.id] = loc
                    facts.bound.discard(target.id)
                else:
                    self.expr(target)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            self.expr(node)
        elif isinstance(node, ast.Match):
            self.expr(node.subject)
            saved = set(facts.bound)
            for case in node.cases:
                facts.bound = set(saved)
                self.expr(case.pattern)
                if case.guard is not None:
                    self.expr(case.guard)
                self.block(case.body)
            facts.bound = saved
        elif isinstance(node, ast.Global | ast.Nonlocal | ast.Pass | ast.Break | ast.Continue):
            return
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    self.stmt(child)
                else:
                    self.expr(child)
