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
- a mutation through an *alias* counts for the aliased names too: ``d = train`` (and
  ``for d in (train, test)``, ``a, b = train, test``, ``dfs = [train, test]``) make ``d`` an
  alias, until ``d`` is bound to something else; calls that change an argument in place
  (``random.shuffle(x)``, ``next(it)``, ``out=x``; see `_effects`) mutate that argument's root;
- calls of functions by name are recorded with the roots of their arguments (`CallFact`), so
  the pipeline builder can tell which arguments a notebook-defined function changes
  (``def add_col(df): df["r"] = 1`` then ``add_col(data)`` mutates ``data``), transitively;
- the block also records the seeding of global random generators, whether it may draw from
  one, changes of process-wide settings (``pd.set_option``, ``os.environ[...] = ...``), the
  files it reads and writes through literal paths, names bound to string constants, and the
  names whose last binding is an import (modules are re-imported, never passed as data);
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
import builtins
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cellpipe.notebook import _effects
from cellpipe.notebook._effects import PathSpec

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
        "savefig", "show", "summary", "iterrows", "itertuples", "corrwith", "rank", "cummax",
        "cummin", "reindex", "assign", "asfreq", "to_period", "to_timestamp",
        "bar", "barh", "scatter", "line", "box", "kde", "pie", "area",
    }
)  # fmt: skip

_BUILTINS = frozenset(dir(builtins))
_ACCESSORS = frozenset({"plot", "str", "dt", "cat", "sparse", "style"})

_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFact:
    """A call of a function by its name, with the root names of its arguments.

    Attributes:
        callee: the called name (``add_col``).
        args: per positional argument, the names it may refer to (root and aliases); a
            starred argument ends the list.
        keywords: the same for keyword arguments.
        loc: where the call is.
    """

    callee: str
    args: tuple[frozenset[str], ...]
    keywords: Mapping[str, frozenset[str]]
    loc: Loc


@dataclass(frozen=True, slots=True, kw_only=True)
class FileFact:
    """A file a block reads or writes through a literal path (or a name bound to one)."""

    kind: str  # "read" or "write"
    path: PathSpec
    loc: Loc


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionFacts:
    """What calling a module-level function (or class) may do.

    Attributes:
        reads: free names it reads (globals), first location each.
        writes: globals it assigns (``global g; g = ...``).
        mutates: free names it may mutate.
        params: its positional parameters, in order.
        vararg: the name of its ``*args`` parameter, if any.
        param_mutates: the parameters it changes in place directly (``df["r"] = 1``).
        calls: the calls by name in its body, for the arguments it passes on.
        seeds: seedings of global random generators in its body.
        files: the files its body reads and writes.
    """

    reads: Mapping[str, Loc]
    writes: Mapping[str, Loc]
    mutates: Mapping[str, Loc]
    params: tuple[str, ...] = ()
    vararg: str | None = None
    param_mutates: frozenset[str] = frozenset()
    calls: tuple[CallFact, ...] = ()
    seeds: Mapping[str, Loc] = field(default_factory=dict)
    files: tuple[FileFact, ...] = ()


def describe_syntax_error(exc: SyntaxError) -> str:
    """Return a syntax error's message and the offending line: ``expected ':' in `if x```.

    The line is what the text form of ``cellpipe check`` shows (cell and line come beside it).
    """
    lines = (exc.text or "").strip().splitlines()
    return f"{exc.msg} in `{lines[0].strip()}`" if lines else exc.msg


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
    aliases: dict[str, frozenset[str]] = field(default_factory=dict)
    calls: list[CallFact] = field(default_factory=list)
    import_binds: dict[str, tuple[str, Loc]] = field(default_factory=dict)
    seeds: dict[str, Loc] = field(default_factory=dict)
    draws: Loc | None = None
    settings: dict[str, Loc] = field(default_factory=dict)
    files: list[FileFact] = field(default_factory=list)
    constants: dict[str, str] = field(default_factory=dict)

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
            self.syntax_errors.append(((cell, exc.lineno or 1), describe_syntax_error(exc)))
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


def _target_names(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Tuple | ast.List):
        return [n for elt in node.elts for n in _target_names(elt)]
    if isinstance(node, ast.Starred):
        return _target_names(node.value)
    return []


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
        "aliases",
        "calls",
        "cell",
        "declared",
        "deferred",
        "draws",
        "files",
        "global_writes",
        "imports",
        "kind",
        "loads",
        "mutations",
        "seeds",
        "settings",
        "stars",
        "stores",
        "walrus",
    )

    def __init__(
        self, kind: str, cell: int, aliases: Mapping[str, frozenset[str]] | None = None
    ) -> None:
        self.kind = kind  # "expr" (module level), "function", "class" or "comp"
        self.cell = cell
        # name -> the names it may refer to. A module-level or comprehension scope shares its
        # block's aliases (read only: only statements add aliases, and such scopes have none
        # of their own); functions and classes start their own.
        self.aliases: Mapping[str, frozenset[str]] = aliases if aliases is not None else {}
        self.calls: list[CallFact] = []
        self.seeds: dict[str, Loc] = {}
        self.draws: Loc | None = None
        self.settings: dict[str, Loc] = {}
        self.files: list[FileFact] = []
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
                self.mutate(name, self.loc(node))
            else:
                self.visit(node.target)
        elif kind is ast.Attribute or kind is ast.Subscript:
            if not isinstance(node.ctx, ast.Load):  # type: ignore[attr-defined]
                root = _root(node)  # type: ignore[arg-type]
                if root is not None:
                    self.mutate(root.id, self.loc(node))
                changed = _effects.settings_target(node)  # type: ignore[arg-type]
                if changed is not None:
                    self.settings.setdefault(changed, self.loc(node))
            for child in ast.iter_child_nodes(node):
                self.visit(child)
        elif kind is ast.Assign and self.kind != "expr":
            assert isinstance(node, ast.Assign)
            self.visit(node.value)
            roots = self.alias_roots(node.value)
            for assigned in node.targets:
                self.visit(assigned)
                for name in _target_names(assigned):
                    if roots:
                        self.add_alias(name, roots)
        elif (kind is ast.For or kind is ast.AsyncFor) and self.kind != "expr":
            assert isinstance(node, ast.For | ast.AsyncFor)
            self.visit(node.iter)
            roots = self.element_roots(node.iter)
            for name in _target_names(node.target):
                if roots:
                    self.add_alias(name, roots)
            self.visit(node.target)
            for stmt in (*node.body, *node.orelse):
                self.visit(stmt)
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

    def add_alias(self, name: str, roots: frozenset[str]) -> None:
        if not isinstance(self.aliases, dict):
            self.aliases = dict(self.aliases)
        self.aliases[name] = self.aliases.get(name, frozenset()) | roots

    def mutate(self, name: str, loc: Loc) -> None:
        """Record a change of ``name`` in place, and of every name it may refer to."""
        self.mutations.setdefault(name, loc)
        for other in self.aliases.get(name, ()):
            self.mutations.setdefault(other, loc)

    def names_of(self, node: ast.expr) -> frozenset[str]:
        """The names an argument expression may refer to: its root and the root's aliases."""
        root = _root(node)
        if root is None:
            return frozenset()
        return frozenset({root.id}) | self.aliases.get(root.id, frozenset())

    def alias_roots(self, value: ast.expr) -> frozenset[str]:
        """The names a value may refer to when it is a name or a literal container of names."""
        if isinstance(value, ast.Name):
            return frozenset({value.id}) | self.aliases.get(value.id, frozenset())
        if isinstance(value, ast.Tuple | ast.List | ast.Set):
            found: frozenset[str] = frozenset()
            for elt in value.elts:
                found |= self.alias_roots(elt.value if isinstance(elt, ast.Starred) else elt)
            return found
        if isinstance(value, ast.Dict):
            found = frozenset()
            for elt in value.values:
                found |= self.alias_roots(elt)
            return found
        return frozenset()

    def element_roots(self, iterable: ast.expr) -> frozenset[str]:
        """The names the elements of a loop's iterable may refer to."""
        if (
            isinstance(iterable, ast.Call)
            and isinstance(iterable.func, ast.Name)
            and iterable.func.id in ("enumerate", "zip", "reversed", "list", "tuple", "iter")
        ):
            found: frozenset[str] = frozenset()
            for arg in iterable.args:
                found |= self.element_roots(arg)
            return found
        if (
            isinstance(iterable, ast.Call)
            and isinstance(iterable.func, ast.Attribute)
            and iterable.func.attr in ("values", "items")
        ):
            return self.alias_roots(iterable.func.value)
        return self.alias_roots(iterable)

    def call(self, node: ast.Call) -> None:
        func = node.func
        loc = (self.cell, node.lineno)
        last = _effects.last_name(node)
        mutating = (
            isinstance(func, ast.Attribute)
            and last not in READ_ONLY_METHODS
            # pandas accessors return new objects: ``df.plot.bar()``, ``s.str.lower()``
            and not (isinstance(func.value, ast.Attribute) and func.value.attr in _ACCESSORS)
        )
        if node.keywords and any(
            k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        ):
            mutating = True
        if mutating and isinstance(func, ast.Attribute):
            root = _root(func.value)
            if root is not None:
                self.mutate(root.id, loc)
        if isinstance(func, ast.Name) and func.id not in _BUILTINS:
            args: list[frozenset[str]] = []
            for arg in node.args:
                if isinstance(arg, ast.Starred):
                    break
                args.append(self.names_of(arg))
            keywords = {k.arg: self.names_of(k.value) for k in node.keywords if k.arg}
            self.calls.append(
                CallFact(callee=func.id, args=tuple(args), keywords=keywords, loc=loc)
            )
        if self.draws is None and _effects.may_draw(node):
            self.draws = loc
        if last in _effects.NOTABLE or node.keywords:
            self.effects(node, loc)
        for child in ast.iter_child_nodes(node):
            self.visit(child)

    def effects(self, node: ast.Call, loc: Loc) -> None:
        """Record what a call with a notable name does beyond its value (see `_effects`)."""
        for arg in _effects.mutated_arguments(node):
            for name in self.names_of(arg):
                self.mutate(name, loc)
        if _effects.is_seed_call(node):
            self.seeds.setdefault(_effects.dotted(node.func) or "seed", loc)
        setting = _effects.settings_change(node)
        if setting is not None:
            self.settings.setdefault(setting, loc)
        access = _effects.file_access(node)
        if access is not None:
            kind, specs = access
            self.files.extend(FileFact(kind=kind, path=spec, loc=loc) for spec in specs)

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
        params = tuple(a.arg for a in (*args.posonlyargs, *args.args))
        all_params = set(_arg_names(args))
        return FunctionFacts(
            reads=free,
            writes=writes,
            mutates=mutates,
            params=params,
            vararg=args.vararg.arg if args.vararg else None,
            param_mutates=frozenset(n for n in child.mutations if n in all_params),
            calls=tuple(child.calls),
            seeds=dict(child.seeds),
            files=tuple(child.files),
        )

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
        self._merge_immediate(child)
        return FunctionFacts(reads=reads, writes=writes, mutates=mutates)

    def comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> None:
        child = _Scope("comp", self.cell, self.aliases)
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
        self._merge_immediate(child)

    def _merge_immediate(self, child: _Scope) -> None:
        # Comprehensions and class bodies run where they stand: their calls, seedings,
        # draws, settings and files are this scope's. A function's run when it is called.
        _take_effects(self, child)

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


def _take_effects(into: _Scope | BlockFacts, source: _Scope) -> None:
    """Add the calls, seedings, first draw, settings and files of ``source`` to ``into``."""
    into.calls.extend(source.calls)
    for name, loc in source.seeds.items():
        into.seeds.setdefault(name, loc)
    if into.draws is None:
        into.draws = source.draws
    for name, loc in source.settings.items():
        into.settings.setdefault(name, loc)
    into.files.extend(source.files)


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
        # Any binding ends what the name referred to before; callers that bind an alias,
        # an import or a constant record it after this.
        self.facts.aliases.pop(name, None)
        self.facts.import_binds.pop(name, None)
        self.facts.constants.pop(name, None)

    def apply(self, scope: _Scope) -> None:
        facts = self.facts
        _take_effects(facts, scope)
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
        scope = _Scope("expr", self.cell, self.facts.aliases)
        scope.visit(node)
        self.apply(scope)

    def alias(self, targets: Iterable[ast.expr], roots: frozenset[str]) -> None:
        if not roots:
            return
        for target in targets:
            for name in _target_names(target):
                if name not in roots:
                    self.facts.aliases[name] = roots

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
            self.alias(
                node.targets, _Scope("expr", self.cell, facts.aliases).alias_roots(node.value)
            )
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        facts.constants[target.id] = value.value
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
                for other in facts.aliases.get(name, ()):  # ``x += [1]`` on a list alias
                    facts.mutates.setdefault(other, loc)
                self.bind(name, loc)
            else:
                self.expr(node.target)
        elif isinstance(node, ast.For | ast.AsyncFor):
            self.expr(node.iter)
            self.target(node.target)
            roots = _Scope("expr", self.cell, facts.aliases).element_roots(node.iter)
            self.alias([node.target], roots)
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
            for alias in node.names:
                if alias.name == "*":
                    continue
                single = (
                    ast.Import(names=[alias])
                    if isinstance(node, ast.Import)
                    else ast.ImportFrom(module=node.module, names=[alias], level=node.level)
                )
                bound = alias.asname or alias.name.split(".")[0]
                if isinstance(node, ast.ImportFrom):
                    bound = alias.asname or alias.name
                facts.import_binds[bound] = (ast.unparse(single), loc)
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
