"""Cells with tags -> a checked `Pipeline`: steps, data edges, parameters, metrics, packages.

Owns: `analyze_source` (and `analyze_notebook`/`load_pipeline` on top of it), which assigns cells
to steps, analyses each step, resolves the producer of every name a step reads, and collects
*every* definition problem before anything runs.

Cell assignment (Kale's rules):
- a cell tagged ``step:NAME`` belongs to step NAME; with several names it belongs to each, and
  untagged cells after it continue the *last* name;
- naming again a step of the last step tag continues it (``step:a`` on consecutive cells, or
  with untagged, skip, markdown or imports/functions cells between); a name that reappears
  after another step's tag is a ``duplicate-step`` error naming both cells (Kale merges the
  cells, which changes the order of their effects);
- an untagged cell (or ``step:`` with no name) continues the block above it: a step, or the
  imports, functions, parameters or metrics cells; ``skip`` cells are left out and do not change
  what the next untagged cell continues;
- untagged code before the first tagged cell is left out with a ``code-before-first-step``
  warning naming the cells (Kale drops it); its ``%pip install`` / ``!pip install`` lines count
  as requirements of every step. Step settings on such a cell are an ``orphan-cell`` error;
- with no ``step:``/``block:`` names at all, every untagged code cell is one step ``main``;
- ``prev:`` and setting tags apply to the step(s) the cell belongs to; on imports, functions,
  parameters or metrics cells they are a ``misplaced-tag`` error; on a ``skip`` cell (also
  with step names: ``skip`` wins, as in Kale) a ``skip-with-step-tags`` warning, and the cell is
  skipped;
- markdown, raw and whitespace-only code cells are ignored (a tagged empty cell still declares
  its step).

Resolution: steps are taken in the topological order of the ``prev:`` edges, notebook order
among ties. For each name a step needs, the producer is the latest earlier step that binds,
mutates, deletes or (through ``global``) assigns it; for a step with ``prev:`` tags, the latest
such step among its declared ancestors if there is one (Kale's semantics: siblings the user put
in parallel do not see each other's changes). Names bound by the imports and functions cells,
parameters and builtins need no producer. A step that assigns a name only through a function
(``global``) also reads it, as the old value may survive. Shared names a step assigns are
warned about (``shadows-shared-name``); other steps keep seeing the shared value. When a second
candidate step is not an ancestor of the producer and the producer does not fully rebind the
name, one change would be lost: ``ambiguous-producer``. Star imports (a warning) switch off
``undefined-name`` for the steps that see them.

Must not depend on: storage, runner, kfp, registry, serving, cli, ui.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cellpipe.errors import PipelineValidationError, Problem
from cellpipe.notebook import _effects
from cellpipe.notebook.analyze import (
    BlockFacts,
    CallFact,
    FileFact,
    FunctionFacts,
    Loc,
    describe_syntax_error,
)
from cellpipe.notebook.magics import (
    PipRequirement,
    has_ipython_syntax,
    pip_requirements,
    repeating_magics,
    to_python,
)
from cellpipe.notebook.packages import pip_name, resolve_modules
from cellpipe.notebook.parse import CODE, MARKDOWN, NotebookSource, read_notebook
from cellpipe.notebook.settings import StepDefaults, read_settings
from cellpipe.notebook.tags import CellTags, Role, parse_tags
from cellpipe.pipeline import (
    RANDOM_STATE,
    CodeChunk,
    FileRef,
    InputRef,
    JsonValue,
    Metric,
    Package,
    Parameter,
    Pipeline,
    Step,
    StepSettings,
)

MAIN_STEP = "main"
_AMBIENT = frozenset(dir(builtins)) | {"get_ipython", "display"}
_SHARED_ROLES = {Role.IMPORTS, Role.FUNCTIONS, Role.PARAMETERS, Role.METRICS}


@dataclass(frozen=True, slots=True, kw_only=True)
class NotebookReport:
    """Everything `analyze_notebook` found: the pipeline if valid, the errors and the warnings.

    Attributes:
        path: the notebook.
        pipeline: the validated pipeline, or None when there are errors.
        errors: every definition problem, in notebook order where known.
        warnings: non-fatal problems (also in ``pipeline.warnings``).
    """

    path: Path
    pipeline: Pipeline | None
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the notebook defines a valid pipeline."""
        return self.pipeline is not None and not self.errors


def load_pipeline(path: Path) -> Pipeline:
    """Read the notebook at ``path`` and return its validated pipeline.

    Args:
        path: an ``.ipynb`` file or a jupytext percent script (``.py``).

    Returns:
        The pipeline, with its warnings in ``Pipeline.warnings``.

    Raises:
        NotebookParseError: if the file cannot be read as a notebook.
        PipelineValidationError: with every definition problem found (unknown tags too).
    """
    report = analyze_notebook(path)
    if report.errors or report.pipeline is None:
        raise PipelineValidationError(report.errors, path=str(path))
    return report.pipeline


def analyze_notebook(path: Path) -> NotebookReport:
    """Read and analyse the notebook at ``path``, returning errors and warnings together.

    Use it where both must be shown (``cellpipe check --json``); `load_pipeline` raises instead.

    Raises:
        NotebookParseError: if the file cannot be read as a notebook.
    """
    return analyze_source(read_notebook(path))


def analyze_source(source: NotebookSource) -> NotebookReport:
    """Analyse an already read notebook; see `analyze_notebook`.

    Never raises on notebook content: every problem is in the report.
    """
    return _Builder(source).run()


@dataclass(slots=True, kw_only=True)
class _Draft:
    name: str
    position: int
    cells: list[int] = field(default_factory=list)
    chunks: list[CodeChunk] = field(default_factory=list)
    prev: dict[str, int] = field(default_factory=dict)
    tags: list[tuple[int, CellTags]] = field(default_factory=list)
    pip: list[tuple[int, PipRequirement]] = field(default_factory=list)

    def add(self, cell: int, chunk: CodeChunk | None, tags: CellTags | None) -> None:
        if cell not in self.cells:
            self.cells.append(cell)
        if chunk is not None:
            self.chunks.append(chunk)
        if tags is not None and tags.has_settings:
            self.tags.append((cell, tags))
            for name in tags.prev:
                self.prev.setdefault(name, cell)


@dataclass(slots=True, kw_only=True)
class _Analysis:
    needs: dict[str, tuple[Loc, str | None]]
    writes: set[str]
    local: set[str]
    deleted: set[str]
    parameters: set[str]
    star: bool
    # name -> (import statement, where): names whose last binding in the step is an import;
    # a later step that needs one imports it again (modules are never data)
    imports: dict[str, tuple[str, Loc]] = field(default_factory=dict)
    seeds: dict[str, Loc] = field(default_factory=dict)
    draws: Loc | None = None
    reads_files: dict[str, Loc] = field(default_factory=dict)
    writes_files: dict[str, Loc] = field(default_factory=dict)


def _at(loc: Loc) -> str:
    return f"cell {loc[0]}, line {loc[1]}"


class _Builder:
    def __init__(self, source: NotebookSource) -> None:
        self.source = source
        self.path = str(source.path)
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.drafts: dict[str, _Draft] = {}
        self.shared: dict[Role, list[CodeChunk]] = {role: [] for role in _SHARED_ROLES}
        self.shared_pip: list[tuple[int, PipRequirement]] = []
        self.facts: dict[str, BlockFacts] = {}
        self.explicit: dict[str, set[str]] = {}
        self.known_names: set[str] = set()
        self.writers: dict[str, list[int]] = {}
        self.ancestors: list[int] = []
        self.param_strings: dict[str, str] = {}
        self.reimports: dict[str, dict[str, tuple[str, Loc]]] = {}
        self.files: dict[str, dict[str, FileRef]] = {}

    def run(self) -> NotebookReport:
        settings, defaults, warnings = read_settings(self.source.metadata, path=self.path)
        self.warnings.extend(warnings)
        self.assign_cells()
        params = self.parse_parameters()
        metrics = self.parse_metrics()
        param_names = {p.name for p in params}
        self.param_strings = {p.name: p.default for p in params if isinstance(p.default, str)}
        shared = self.analyze_shared(param_names)
        order = self.order_steps()
        analyses = {
            name: self.analyze_step(self.drafts[name], shared, param_names) for name in order
        }
        self.random_state(order, analyses, shared)
        self.process_state(order)
        inputs, outputs, upstream = self.resolve(order, analyses, shared, param_names)
        metric_objs = self.resolve_metrics(metrics, order, analyses, outputs, param_names)
        packages = self.packages(shared, order)
        steps = []
        for name in order:
            draft = self.drafts[name]
            steps.append(
                Step(
                    name=name,
                    cells=tuple(draft.cells),
                    code=self._reimports(name) + tuple(draft.chunks),
                    upstream=tuple(sorted(upstream[name])),
                    inputs=tuple(
                        InputRef(name=n, producer=p) for n, p in sorted(inputs[name].items())
                    ),
                    outputs=tuple(sorted(outputs[name])),
                    binds=tuple(
                        sorted(
                            n
                            for n in set(self.facts[name].binds) - set(outputs[name])
                            if not n.startswith("_")  # private or throwaway (`_deadline`, `_`)
                        )
                    ),
                    parameters=tuple(sorted(analyses[name].parameters)),
                    packages=packages[name],
                    settings=self.step_settings(draft, defaults),
                    files=tuple(sorted(self.files.get(name, {}).values(), key=lambda f: f.path)),
                )
            )
        if not steps and not self.errors:
            self.errors.append(
                Problem(
                    code="no-steps",
                    message="the notebook has no code to run in a step",
                    hint="tag a code cell step:NAME, or add untagged code cells",
                )
            )
        pipeline = None
        if not self.errors:
            steps.sort(key=lambda s: self.drafts[s.name].position)
            try:
                pipeline = Pipeline.build(
                    name=settings.pipeline_name or self.source.path.stem,
                    path=self.path,
                    steps=steps,
                    parameters=params,
                    metrics=metric_objs,
                    imports=self.shared[Role.IMPORTS],
                    functions=self.shared[Role.FUNCTIONS],
                    settings=settings,
                    warnings=self.warnings,
                    markdown=[
                        CodeChunk(cell=c.number, source=text, python="")
                        for c in self.source.cells
                        if c.kind == MARKDOWN
                        and (text := _markdown_text(c.source, self.source.path))
                    ],
                )
            except PipelineValidationError as exc:
                self.errors.extend(exc.problems)
        errors = sorted(self.errors, key=lambda p: (p.cell or 0, p.line or 0))
        return NotebookReport(
            path=self.source.path,
            pipeline=pipeline if not errors else None,
            errors=tuple(errors),
            warnings=tuple(self.warnings),
        )

    # -- cells -> blocks ---------------------------------------------------------------------

    def assign_cells(self) -> None:
        code_cells = [c for c in self.source.cells if c.kind == CODE]
        parsed = [parse_tags(c.tags, cell=c.number) for c in code_cells]
        has_steps = any(t.role is Role.STEP and t.steps for t in parsed)
        current: list[str] | Role | None = None
        first_cell: dict[str, int] = {}  # step name -> the cell that started it
        group: tuple[list[str], int] | None = None  # names of the last step tag, and its cell
        before_first: list[int] = []
        for cell, tags in zip(code_cells, parsed, strict=True):
            self.errors.extend(tags.problems)
            empty = not cell.source.strip()
            role = tags.role
            if role is Role.SKIP:
                self._skipped(cell.number, tags)
                continue
            chunk = None if empty else self._chunk(cell.number, cell.source)
            if role in _SHARED_ROLES:
                self._no_settings(cell.number, tags, str(role))
                current = role
                if chunk is not None:
                    self.shared[role].append(chunk)
                    self._pip(cell.number, chunk.source, None)
                continue
            if not has_steps:
                current = [MAIN_STEP] if (chunk is not None or tags.has_settings) else current
                if current is None or isinstance(current, Role):
                    continue
            elif role is Role.STEP and tags.steps:
                names = list(tags.steps)
                self._check_reused(cell.number, names, first_cell, group)
                for name in names:
                    first_cell.setdefault(name, cell.number)
                if group is None or names != group[0]:
                    group = (names, cell.number)
                current = names
            if current is None:
                if tags.has_settings:
                    self.errors.append(
                        Problem(
                            code="orphan-cell",
                            message=f"cell {cell.number} has step tags (prev:, image:, limit:, "
                            "...) but comes before the first step",
                            cell=cell.number,
                            hint="add the step's name (`step:NAME`) to the cell's tags",
                        )
                    )
                elif chunk is not None:
                    before_first.append(cell.number)
                    self._pip(cell.number, chunk.source, None)
                continue
            if isinstance(current, Role):
                self._no_settings(cell.number, tags, str(current))
                if chunk is not None:
                    self.shared[current].append(chunk)
                    self._pip(cell.number, chunk.source, None)
                continue
            if chunk is None and not tags.steps and not tags.has_settings:
                continue
            targets = current if role is Role.STEP and tags.steps else current[-1:]
            for name in targets:
                draft = self.drafts.get(name)
                if draft is None:
                    draft = self.drafts[name] = _Draft(name=name, position=len(self.drafts))
                draft.add(cell.number, chunk, tags)
                if chunk is not None:
                    self._pip(cell.number, chunk.source, draft)
        if before_first:
            self._before_first_step(before_first)

    def _check_reused(
        self,
        cell: int,
        names: list[str],
        first_cell: Mapping[str, int],
        group: tuple[list[str], int] | None,
    ) -> None:
        # A name that reappears after another step started would merge cells that are not
        # next to each other into one step, and run the later cell before the steps between.
        # Naming a step of the last step tag again (`step:a` twice in a row, with untagged,
        # skip, markdown or imports/functions cells between, or one of the names of a
        # multi-step cell) continues it and is fine.
        if group is None:
            return
        last, last_cell = group
        for name in names:
            first = first_cell.get(name)
            if first is None or name in last:
                continue
            between = " and ".join(f"'{n}'" for n in last)
            self.errors.append(
                Problem(
                    code="duplicate-step",
                    message=f"step '{name}' (first cell {first}) is used again in cell {cell}, "
                    f"after step {between} started in cell {last_cell}: the two cells would be "
                    "merged into one step and the order of their effects would change",
                    cell=cell,
                    step=name,
                    hint=f"rename the step of cell {cell} (e.g. `step:{name}_2`), or merge the "
                    f"cells: move cell {cell} up to follow cell {first}",
                )
            )

    def _before_first_step(self, cells: list[int]) -> None:
        which = ", ".join(str(c) for c in cells)
        noun = "cell" if len(cells) == 1 else "cells"
        self.warnings.append(
            Problem(
                code="code-before-first-step",
                message=f"{noun} {which} {'has' if len(cells) == 1 else 'have'} code but "
                f"{'comes' if len(cells) == 1 else 'come'} before the first step, so "
                f"{'it is' if len(cells) == 1 else 'they are'} left out of the pipeline (as "
                "Kale does); `%pip install` / `!pip install` lines there still count as "
                "requirements of every step",
                cell=cells[0],
                hint="tag the cells `skip` to keep them out, `imports` if the steps need "
                "them, or give them a step (`step:NAME`)",
            )
        )

    def _skipped(self, cell: int, tags: CellTags) -> None:
        if not (tags.has_settings or tags.steps):
            return
        what = [f"step:{n}" for n in tags.steps] + _setting_tags(tags)
        self.warnings.append(
            Problem(
                code="skip-with-step-tags",
                message=f"cell {cell} is tagged `skip` and also has step tags "
                f"({', '.join(what)}); the cell is skipped and those tags are ignored",
                cell=cell,
                hint="remove `skip` to run the cell in its step, or remove the step tags",
            )
        )

    def _chunk(self, cell: int, source: str) -> CodeChunk:
        for line in repeating_magics(source):
            self.warnings.append(
                Problem(
                    code="timeit-repeats",
                    message=f"cell {cell}, line {line} runs code with timeit, which runs it many "
                    "times (as in Jupyter): its changes to existing objects happen repeatedly, "
                    "and the names it assigns stay inside the timing loop",
                    cell=cell,
                    line=line,
                    hint="use %%time (or %time) to run the code once, or move the timing to a "
                    "cell tagged `skip`",
                )
            )
        return CodeChunk(cell=cell, source=source, python=to_python(source))

    def _pip(self, cell: int, source: str, draft: _Draft | None) -> None:
        if not has_ipython_syntax(source):
            return
        for req in pip_requirements(source):
            (draft.pip if draft is not None else self.shared_pip).append((cell, req))

    def _no_settings(self, cell: int, tags: CellTags, role: str) -> None:
        if tags.has_settings:
            self.errors.append(
                Problem(
                    code="misplaced-tag",
                    message=f"cell {cell} is a '{role}' cell but has step tags "
                    "(prev:, image:, limit:, cache:, annotation:, label:, secret:, report:, "
                    "processes:)",
                    cell=cell,
                    hint="move these tags to a cell of the step they are for",
                )
            )

    # -- parameters and metrics --------------------------------------------------------------

    def _parse_chunk(self, chunk: CodeChunk, what: str) -> list[ast.stmt]:
        try:
            return ast.parse(chunk.python).body
        except SyntaxError as exc:
            self.errors.append(
                Problem(
                    code="syntax-error",
                    message=f"the {what} cell (cell {chunk.cell}, line {exc.lineno}) does not "
                    f"parse: {describe_syntax_error(exc)}",
                    cell=chunk.cell,
                    line=exc.lineno,
                )
            )
        except (ValueError, RecursionError, MemoryError) as exc:
            self.errors.append(
                Problem(
                    code="syntax-error",
                    message=f"the {what} cell (cell {chunk.cell}) does not parse: {exc}",
                    cell=chunk.cell,
                )
            )
        return []

    def parse_parameters(self) -> list[Parameter]:
        params: list[Parameter] = []
        seen: dict[str, Loc] = {}
        for chunk in self.shared[Role.PARAMETERS]:
            for stmt in self._parse_chunk(chunk, "pipeline-parameters"):
                loc = (chunk.cell, stmt.lineno)
                target: ast.expr | None = None
                value: ast.expr | None = None
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    target, value = stmt.targets[0], stmt.value
                elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                    target, value = stmt.target, stmt.value
                if not isinstance(target, ast.Name) or value is None:
                    self.errors.append(
                        Problem(
                            code="bad-parameter",
                            message=f"the pipeline-parameters cell ({_at(loc)}) may only contain "
                            "`NAME = literal` lines",
                            cell=loc[0],
                            line=loc[1],
                            hint="move other code to a step or the functions cell",
                        )
                    )
                    continue
                literal = _literal(value)
                if literal is None:
                    self.errors.append(
                        Problem(
                            code="bad-parameter",
                            message=f"parameter '{target.id}' ({_at(loc)}) must be a literal "
                            "(int, float, bool, str, None, or a list or dict of those)",
                            cell=loc[0],
                            line=loc[1],
                            hint="compute derived values in a step",
                        )
                    )
                    continue
                if target.id in seen:
                    self.errors.append(
                        Problem(
                            code="duplicate-parameter",
                            message=f"parameter '{target.id}' ({_at(loc)}) is already defined "
                            f"at {_at(seen[target.id])}",
                            cell=loc[0],
                            line=loc[1],
                        )
                    )
                    continue
                seen[target.id] = loc
                params.append(
                    Parameter(
                        name=target.id,
                        type=type(literal[0]).__name__,
                        default=literal[0],
                        cell=loc[0],
                        line=loc[1],
                    )
                )
        return params

    def parse_metrics(self) -> list[tuple[str, Loc]]:
        metrics: dict[str, Loc] = {}
        for chunk in self.shared[Role.METRICS]:
            for stmt in self._parse_chunk(chunk, "pipeline-metrics"):
                loc = (chunk.cell, stmt.lineno)
                names = _metric_names(stmt)
                if names is None:
                    self.errors.append(
                        Problem(
                            code="bad-metric",
                            message=f"the pipeline-metrics cell ({_at(loc)}) may only name "
                            "variables: `acc` or `print(acc)`",
                            cell=loc[0],
                            line=loc[1],
                        )
                    )
                    continue
                for name in names:
                    metrics.setdefault(name, loc)
        return list(metrics.items())

    # -- analysis ----------------------------------------------------------------------------

    def analyze_shared(self, params: set[str]) -> _Shared:
        facts = BlockFacts()
        for role in (Role.IMPORTS, Role.FUNCTIONS):
            for chunk in self.shared[role]:
                facts.add_cell(chunk.cell, chunk.python)
        self._syntax_errors(facts, None)
        self._star_warnings(facts)
        names = set(facts.binds)
        shared_params = set()
        for name, loc in facts.reads.items():
            if name in names or name in _AMBIENT:
                continue
            if name in params:
                shared_params.add(name)
            elif not facts.star_imports:
                self.errors.append(
                    Problem(
                        code="undefined-name",
                        message=f"the imports/functions code ({_at(loc)}) reads '{name}', but "
                        "only the imports, functions and pipeline-parameters cells run before it",
                        cell=loc[0],
                        line=loc[1],
                        hint="define it in the functions cell, or pass it to your function "
                        "as an argument",
                    )
                )
        return _Shared(
            names=names,
            functions=facts.functions,
            imports=facts.imports,
            parameters=shared_params,
            star=bool(facts.star_imports),
            constants=dict(facts.constants),
            imports_bound={n: stmt for n, (stmt, _) in facts.import_binds.items()},
            seeds=dict(facts.seeds),
        )

    def _syntax_errors(self, facts: BlockFacts, step: str | None) -> None:
        for loc, msg in facts.syntax_errors:
            owner = f" (step '{step}')" if step else ""
            self.errors.append(
                Problem(
                    code="syntax-error",
                    message=f"cell {loc[0]}, line {loc[1]}{owner} does not parse: {msg}",
                    cell=loc[0],
                    line=loc[1],
                    step=step,
                )
            )

    def _star_warnings(self, facts: BlockFacts, step: str | None = None) -> None:
        for loc in facts.star_imports:
            self.warnings.append(
                Problem(
                    code="star-import",
                    message=f"`import *` ({_at(loc)}) hides which names it defines, so cellpipe "
                    "cannot check the names used after it",
                    cell=loc[0],
                    line=loc[1],
                    step=step,
                    hint="import the names you use explicitly",
                )
            )

    def analyze_step(self, draft: _Draft, shared: _Shared, params: set[str]) -> _Analysis:
        facts = BlockFacts()
        for chunk in draft.chunks:
            facts.add_cell(chunk.cell, chunk.python)
        self.facts[draft.name] = facts
        self._syntax_errors(facts, draft.name)
        self._star_warnings(facts, draft.name)
        local = set(facts.binds) | set(facts.global_writes)
        needs: dict[str, tuple[Loc, str | None]] = {
            n: (loc, None) for n, loc in facts.reads.items()
        }
        for name, loc in facts.deferred.items():
            if name not in local:
                needs.setdefault(name, (loc, None))
        # A function that may assign a global is a "may change": like a mutation, the old
        # value may survive, so it is also read unless the step binds it at module level.
        for name, loc in facts.global_writes.items():
            if name not in facts.binds:
                needs.setdefault(name, (loc, None))
        writes = set(facts.binds) | set(facts.mutates) | set(facts.deletes)
        writes |= set(facts.global_writes)
        fn_writes: dict[str, tuple[Loc, str]] = {}
        seeds = dict(facts.seeds)
        files = list(facts.files)
        for own in facts.functions.values():
            for name, loc in own.seeds.items():
                seeds.setdefault(name, loc)
            files.extend(own.files)
        for fname in sorted(shared.functions.keys() & (needs.keys() | facts.deferred.keys())):
            if fname in local:
                continue
            call_loc = needs[fname][0] if fname in needs else facts.deferred[fname]
            closure = shared.closure(fname)
            for name in closure.reads:
                if name not in local:
                    needs.setdefault(name, (call_loc, fname))
            for name in (*closure.writes, *closure.mutates):
                writes.add(name)
                fn_writes.setdefault(name, (call_loc, fname))
                local.add(name)
                if name not in facts.binds:
                    needs.setdefault(name, (call_loc, fname))
            for name in closure.seeds:
                seeds.setdefault(name, call_loc)
            files.extend(FileFact(kind=f.kind, path=f.path, loc=call_loc) for f in closure.files)
        # Arguments that a notebook-defined function changes in place (``add_col(data)``).
        functions = {**shared.functions, **facts.functions}
        for name, (loc, fname) in _call_mutations(facts.calls, functions).items():
            writes.add(name)
            fn_writes.setdefault(name, (loc, fname))
            if name not in facts.binds:
                needs.setdefault(name, (loc, None))
        parameters = set(shared.parameters)
        for name in list(needs):
            if name in params:
                parameters.add(name)
            if name in params or name in shared.names:
                del needs[name]
        # Modules are never data: a name whose last binding is an import is imported again by
        # the steps that need it, and using it (``np.random.seed``) does not change it.
        imports = dict(facts.import_binds)
        writes -= imports.keys()
        for name in sorted(writes & params):
            where = _first(name, facts.binds, facts.global_writes, facts.deletes, facts.mutates)
            via = ""
            if where is None:
                where, fname = fn_writes[name]
                via = f" (through function '{fname}')"
            self.errors.append(
                Problem(
                    code="parameter-assigned",
                    message=f"Step '{draft.name}' ({_at(where)}) changes pipeline parameter "
                    f"'{name}'{via}; parameters are read-only",
                    cell=where[0],
                    line=where[1],
                    step=draft.name,
                    hint=f"copy it to a new name first, e.g. `my_{name} = {name}`",
                )
            )
        for name in sorted((set(facts.binds) | set(facts.global_writes)) & shared.names):
            if name in imports and _import_target(imports[name][0]) == _import_target(
                shared.imports_bound.get(name)
            ):
                continue  # the same import again: harmless
            where = _first(name, facts.binds, facts.global_writes) or (0, 0)
            self.warnings.append(
                Problem(
                    code="shadows-shared-name",
                    message=f"Step '{draft.name}' ({_at(where)}) assigns '{name}', which the "
                    "imports/functions cells define for every step; other steps will not see "
                    "this change",
                    cell=where[0],
                    line=where[1],
                    step=draft.name,
                    hint=f"use another name than '{name}'",
                )
            )
        writes -= params | shared.names
        # ``get_ipython().run_cell_magic(...)`` and ``display(...)`` are calls of the kernel's
        # own functions, not changes of data (unless the step binds those names itself).
        writes -= _AMBIENT - set(facts.binds) - set(facts.global_writes)
        reads_files, writes_files = self._files(files, facts, shared, params)
        return _Analysis(
            needs=needs,
            writes=writes,
            local=local,
            deleted=facts.deleted_at_end,
            parameters=parameters,
            star=bool(facts.star_imports) or shared.star,
            imports=imports,
            seeds=seeds,
            draws=facts.draws,
            reads_files=reads_files,
            writes_files=writes_files,
        )

    def _files(
        self, files: list[FileFact], facts: BlockFacts, shared: _Shared, params: set[str]
    ) -> tuple[dict[str, Loc], dict[str, Loc]]:
        """The workspace files a step reads and writes, by normalised path (first place)."""
        reads: dict[str, Loc] = {}
        writes: dict[str, Loc] = {}
        for fact in files:
            kind, text = fact.path
            if kind == "name":
                value = facts.constants.get(text)
                if value is None and text not in facts.binds:
                    value = shared.constants.get(text)
                if value is None and text in params:
                    value = self.param_strings.get(text)
                if value is None or not _effects.looks_like_file(("literal", value)):
                    continue
                text = value
            path = _effects.normalise(text)
            if path.startswith("../") or path == "..":
                continue  # outside the notebook's folder: not the workspace
            target = writes if fact.kind == "write" else reads
            if path not in target or fact.loc < target[path]:
                target[path] = fact.loc
        return reads, writes

    def _reimports(self, step: str) -> tuple[CodeChunk, ...]:
        # The import statement of the cell that imported the name, padded so that its line
        # number is the one in that cell: tracebacks and `why` point at the user's line.
        chunks = []
        for stmt, (cell, line) in sorted(set(self.reimports.get(step, {}).values())):
            chunks.append(CodeChunk(cell=cell, source=stmt, python="\n" * (line - 1) + stmt))
        return tuple(chunks)

    def random_state(
        self, order: list[str], analyses: Mapping[str, _Analysis], shared: _Shared
    ) -> None:
        """Chain the steps that may draw from a seeded global generator, in notebook order.

        In Jupyter, a generator seeded once continues from cell to cell. Each step that may
        seed or draw (after the first seeding) reads and writes `RANDOM_STATE`, so its state
        flows from step to step like a variable, and those steps run one after another.
        """
        start: int | None = 0 if shared.seeds else None
        seeding = dict(shared.seeds)
        if start is None:
            for i, name in enumerate(order):
                if analyses[name].seeds:
                    start = i
                    seeding = analyses[name].seeds
                    break
        if start is None:
            return
        chain: list[str] = []
        for name in order[start:]:
            analysis = analyses[name]
            places = [*analysis.seeds.values(), *([analysis.draws] if analysis.draws else [])]
            if not places:
                continue
            analysis.needs.setdefault(RANDOM_STATE, (min(places), None))
            analysis.writes.add(RANDOM_STATE)
            chain.append(name)
        if len(chain) < 2:
            return
        call, loc = min(seeding.items(), key=lambda item: item[1])
        self.warnings.append(
            Problem(
                code="random-state",
                message=f"the notebook seeds a global random generator (`{call}`, {_at(loc)}); "
                "as in Jupyter, its state carries on from step to step, so steps "
                + ", ".join(f"'{n}'" for n in chain)
                + " run one after another, in notebook order",
                cell=loc[0],
                line=loc[1],
                hint="to let them run in parallel, draw from explicit generators: "
                "`rng = np.random.default_rng(SEED)` in a step, and `random_state=SEED` for "
                "estimators, instead of seeding the global one",
            )
        )

    def process_state(self, order: list[str]) -> None:
        """Warn about process-wide settings a step changes: later steps will not see them."""
        for name in order[:-1]:
            for what, loc in sorted(self.facts[name].settings.items(), key=lambda i: i[1]):
                self.warnings.append(
                    Problem(
                        code="process-state",
                        message=f"Step '{name}' ({_at(loc)}) changes process-wide state "
                        f"(`{what}`), but each step runs in its own process, so later steps "
                        "will not see this change",
                        cell=loc[0],
                        line=loc[1],
                        step=name,
                        hint="move it to the imports cell, which runs before every step",
                    )
                )

    # -- order and producers -----------------------------------------------------------------

    def order_steps(self) -> list[str]:
        drafts = self.drafts
        names = list(drafts)
        deps: dict[str, set[str]] = {name: set() for name in names}
        for draft in drafts.values():
            for prev, cell in draft.prev.items():
                if prev in drafts and prev != draft.name:
                    deps[draft.name].add(prev)
                    continue
                if prev == draft.name:
                    message = f"step '{prev}' (cell {cell}) names itself in prev:{prev}"
                    self.errors.append(
                        Problem(
                            code="cycle", message=message, cell=cell, step=draft.name,
                            hint=f"remove the prev:{prev} tag",
                        )
                    )  # fmt: skip
                    continue
                close = difflib.get_close_matches(prev, names, n=1)
                suggestion = f" Did you mean '{close[0]}'?" if close else ""
                self.errors.append(
                    Problem(
                        code="unknown-step",
                        message=f"Step '{draft.name}' (cell {cell}) runs after 'prev:{prev}', "
                        f"but there is no step '{prev}'.{suggestion}",
                        cell=cell,
                        step=draft.name,
                        hint="steps: " + ", ".join(names),
                    )
                )
        position = {name: drafts[name].position for name in names}
        waiting = {name: set(ups) for name, ups in deps.items()}
        children: dict[str, list[str]] = {name: [] for name in names}
        for name, ups in deps.items():
            for up in ups:
                children[up].append(name)
        ready = [(position[n], n) for n, ups in waiting.items() if not ups]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(name)
            for child in children[name]:
                waiting[child].discard(name)
                if not waiting[child]:
                    heapq.heappush(ready, (position[child], child))
        if len(order) < len(names):
            stuck = [n for n in names if n not in set(order)]
            cycle = _find_cycle(stuck, deps)
            first = drafts[cycle[0]]
            self.errors.append(
                Problem(
                    code="cycle",
                    message="the prev: tags form a cycle: " + " -> ".join([*cycle, cycle[0]]),
                    cell=first.prev.get(cycle[-1]) or first.cells[0],
                    step=cycle[0],
                    hint="remove one of the prev: tags on this cycle",
                )
            )
            order.extend(stuck)
        at = {name: i for i, name in enumerate(order)}
        self.explicit = {n: {u for u in deps[n] if at[u] < at[n]} for n in names}
        return order

    def resolve(
        self,
        order: list[str],
        analyses: Mapping[str, _Analysis],
        shared: _Shared,
        params: set[str],
    ) -> tuple[dict[str, dict[str, str]], dict[str, set[str]], dict[str, set[str]]]:
        index = {name: i for i, name in enumerate(order)}
        ancestors: list[int] = [0] * len(order)
        writers: dict[str, list[int]] = {}
        all_writers: dict[str, list[str]] = {}
        for name in order:
            for var in analyses[name].writes:
                all_writers.setdefault(var, []).append(name)
        inputs: dict[str, dict[str, str]] = {name: {} for name in order}
        outputs: dict[str, set[str]] = {name: set() for name in order}
        upstream: dict[str, set[str]] = {name: set(self.explicit[name]) for name in order}
        reported: set[tuple[str, int, int]] = set()
        importers: dict[str, list[int]] = {}
        file_writers: dict[str, list[int]] = {}
        self.known_names = set(all_writers) | shared.names | params
        for name in order:
            self.known_names |= analyses[name].imports.keys()
        for i, name in enumerate(order):
            analysis = analyses[name]
            declared = 0
            for up in self.explicit[name]:
                j = index[up]
                declared |= ancestors[j] | (1 << j)
            reimports = self.reimports.setdefault(name, {})
            for var, (loc, via) in sorted(analysis.needs.items()):
                full = writers.get(var)
                imported = importers.get(var)
                if imported and (not full or imported[-1] > full[-1]):
                    reimports[var] = analyses[order[imported[-1]]].imports[var]
                    continue
                if not full:
                    if var == RANDOM_STATE or var in _AMBIENT or var in analysis.local:
                        continue
                    if not analysis.star:
                        self._undefined(name, var, loc, via, all_writers.get(var, []), index)
                    continue
                cands = full
                if declared and var != RANDOM_STATE:
                    # A step with prev: tags sits where the user put it in the graph: it sees
                    # the writers among its declared ancestors, not its parallel siblings.
                    # The random state always flows in notebook order.
                    cands = [c for c in cands if declared >> c & 1] or cands
                producer = cands[-1]
                pname = order[producer]
                if var in analyses[pname].deleted:
                    self.errors.append(
                        Problem(
                            code="deleted-name",
                            message=f"Step '{name}' ({_at(loc)}) reads '{var}', but step "
                            f"'{pname}', the last step before it that changes it, deletes it",
                            cell=loc[0],
                            line=loc[1],
                            step=name,
                            hint=f"remove `del {var}` from step '{pname}', or read it from an "
                            "earlier step by renaming it",
                        )
                    )
                    continue
                if var != RANDOM_STATE:
                    self._check_ambiguous(
                        var, loc, name, full, producer, order, analyses, ancestors, reported
                    )
                inputs[name][var] = pname
                outputs[pname].add(var)
                upstream[name].add(pname)
            refs = self.files.setdefault(name, {})
            for path, loc in sorted(analysis.reads_files.items()):
                own = analysis.writes_files.get(path)
                found = file_writers.get(path)
                if (own is not None and own < loc) or not found:
                    continue  # the step reads what it wrote itself, or what no step writes
                pname = order[found[-1]]
                refs[path] = FileRef(path=path, producer=pname, cell=loc[0], line=loc[1])
                upstream[name].add(pname)
            mask = 0
            for up in upstream[name]:
                j = index[up]
                mask |= ancestors[j] | (1 << j)
            ancestors[i] = mask
            for var in analysis.writes:
                writers.setdefault(var, []).append(i)
            for var in analysis.imports:
                importers.setdefault(var, []).append(i)
            for path in analysis.writes_files:
                file_writers.setdefault(path, []).append(i)
        self.writers = writers
        self.ancestors = ancestors
        return inputs, outputs, upstream

    def _check_ambiguous(
        self,
        var: str,
        loc: Loc,
        reader: str,
        cands: list[int],
        producer: int,
        order: list[str],
        analyses: Mapping[str, _Analysis],
        ancestors: list[int],
        reported: set[tuple[str, int, int]],
    ) -> None:
        # The reader gets the producer's value. In Jupyter it would see every change made
        # before it in notebook order: a writer that is not an ancestor of the producer loses
        # its change, unless a writer that rebinds the name from scratch (and is the producer
        # or one of its ancestors) comes after it anyway. Without prev: tags every read
        # resolves to the latest writer, which chains the writers; with prev: tags two
        # branches may both change a name (also two siblings of one step), and that is
        # reported here.
        pname = order[producer]
        lineage = ancestors[producer] | (1 << producer)
        rebind = -1
        for cand in reversed(cands):
            if lineage >> cand & 1 and var not in analyses[order[cand]].needs:
                rebind = cand
                break
        for other in cands:
            if (
                other == producer
                or other < rebind
                or lineage >> other & 1
                or (var, producer, other) in reported
            ):
                continue
            reported.add((var, producer, other))
            qname = order[other]
            if other > producer:
                hint = (
                    f"add `prev:{qname}` to step '{reader}' so it sees the change made by "
                    f"'{qname}' (as in Jupyter, where '{qname}' runs first), or rename the "
                    "variable in one of them"
                )
            else:
                hint = (
                    f"add `prev:{qname}` to step '{pname}' so it runs after '{qname}', or "
                    "rename the variable in one of them"
                )
            self.errors.append(
                Problem(
                    code="ambiguous-producer",
                    message=f"Step '{reader}' ({_at(loc)}) reads '{var}', which steps '{qname}' "
                    f"and '{pname}' both may change, independently of each other, so the "
                    f"change made by '{qname}' would be lost",
                    cell=loc[0],
                    line=loc[1],
                    step=reader,
                    hint=hint,
                )
            )

    def _undefined(
        self,
        step: str,
        var: str,
        loc: Loc,
        via: str | None,
        later: list[str],
        index: Mapping[str, int],
    ) -> None:
        through = f" (through function '{via}')" if via else ""
        message = (
            f"Step '{step}' ({_at(loc)}) reads '{var}'{through}, but no step before it produces it."
        )
        later = [w for w in later if w != step and index[w] > index[step]]
        if later:
            hint = (
                f"step '{later[0]}' produces '{var}' but runs after '{step}': move the cell "
                f"or add `prev:{later[0]}` to step '{step}'"
            )
        else:
            close = difflib.get_close_matches(var, self.known_names - {var}, n=1)
            if close:
                message += f" Did you mean '{close[0]}'?"
            hint = "define it in an earlier step, or in the imports/functions cells"
        self.errors.append(
            Problem(
                code="undefined-name",
                message=message,
                cell=loc[0],
                line=loc[1],
                step=step,
                hint=hint,
            )
        )

    def resolve_metrics(
        self,
        metrics: list[tuple[str, Loc]],
        order: list[str],
        analyses: Mapping[str, _Analysis],
        outputs: dict[str, set[str]],
        params: set[str],
    ) -> list[Metric]:
        found: list[Metric] = []
        reported: set[tuple[str, int, int]] = set()
        for var, loc in metrics:
            cands = self.writers.get(var)
            if not cands and var in params:
                # A parameter named as a metric (Kale allows it): its value for the run.
                found.append(Metric(name=var, producer="", cell=loc[0], line=loc[1]))
                continue
            if not cands:
                what = "is not"
                self.errors.append(
                    Problem(
                        code="undefined-metric",
                        message=f"metric '{var}' ({_at(loc)}) {what} a value that a step produces",
                        cell=loc[0],
                        line=loc[1],
                        hint="name a variable that a step assigns",
                    )
                )
                continue
            pname = order[cands[-1]]
            if var in analyses[pname].deleted:
                self.errors.append(
                    Problem(
                        code="deleted-name",
                        message=f"metric '{var}' ({_at(loc)}) is deleted by step '{pname}'",
                        cell=loc[0],
                        line=loc[1],
                        hint=f"remove `del {var}` from step '{pname}'",
                    )
                )
                continue
            self._check_ambiguous(
                var,
                loc,
                "pipeline-metrics",
                cands,
                cands[-1],
                order,
                analyses,
                self.ancestors,
                reported,
            )
            outputs[pname].add(var)
            found.append(Metric(name=var, producer=pname, cell=loc[0], line=loc[1]))
        return found

    # -- packages and settings ---------------------------------------------------------------

    def packages(self, shared: _Shared, order: list[str]) -> dict[str, tuple[Package, ...]]:
        modules: dict[str, Loc] = dict(shared.imports)
        step_modules: dict[str, set[str]] = {}
        for name in order:
            facts = self.facts[name]
            step_modules[name] = set(facts.imports)
            for module, loc in facts.imports.items():
                modules.setdefault(module, loc)
            for stmt, _ in self.reimports.get(name, {}).values():
                step_modules[name].add(_imported_module(stmt))
        folder = self.source.path.parent
        resolved = {p.module: p for p in resolve_modules(modules, folder=folder)}
        for module, package in sorted(resolved.items()):
            if package.distribution is None:
                loc = modules[module]
                self.warnings.append(
                    Problem(
                        code="unknown-package",
                        message=f"module '{module}' ({_at(loc)}) is not installed here, so its "
                        "package and version are unknown",
                        cell=loc[0],
                        line=loc[1],
                        hint=_install_hint(module),
                    )
                )
        shared_mods = set(shared.imports)
        result: dict[str, tuple[Package, ...]] = {}
        for name in order:
            mods = sorted((shared_mods | step_modules[name]) & resolved.keys())
            found = [resolved[m] for m in mods]
            pip: dict[str, Package] = {}
            for _, req in (*self.shared_pip, *self.drafts[name].pip):
                pip.setdefault(
                    req.name,
                    Package(module=req.name, distribution=req.name, version=req.version,
                            source="pip"),
                )  # fmt: skip
            result[name] = tuple(found) + tuple(pip[k] for k in sorted(pip))
        return result

    def step_settings(self, draft: _Draft, defaults: StepDefaults) -> StepSettings:
        values: dict[str, tuple[object, int]] = {}

        def put(key: str, value: object, cell: int) -> None:
            old = values.get(key)
            if old is not None and old[0] != value:
                self.errors.append(
                    Problem(
                        code="conflicting-setting",
                        message=f"step '{draft.name}' sets {key} to {old[0]!r} (cell {old[1]}) "
                        f"and to {value!r} (cell {cell})",
                        cell=cell,
                        step=draft.name,
                        hint="keep one of the two tags",
                    )
                )
            values[key] = (value, cell)

        limits = dict(defaults.limits)
        annotations = dict(defaults.annotations)
        labels = dict(defaults.labels)
        secrets: list[str] = []
        for cell, tags in draft.tags:
            if tags.image is not None:
                put("image", tags.image, cell)
            if tags.cache is not None:
                put("cache", tags.cache, cell)
            if tags.report is not None:
                put("report", tags.report, cell)
            if tags.keep_processes is not None:
                put("processes", "keep" if tags.keep_processes else "stop", cell)
            if tags.all_outputs is not None:
                put("outputs", "all" if tags.all_outputs else "needed", cell)
            for kind, pairs, target in (
                ("limit", tags.limits, limits),
                ("annotation", tags.annotations, annotations),
                ("label", tags.labels, labels),
            ):
                for key, value in pairs:
                    put(f"{kind} {key}", value, cell)
                    target[key] = value
            secrets.extend(s for s in tags.secrets if s not in secrets)
        image = values.get("image")
        cache = values.get("cache")
        report = values.get("report")
        processes = values.get("processes")
        stored = values.get("outputs")
        return StepSettings(
            image=str(image[0]) if image else None,
            limits=limits,
            cache=bool(cache[0]) if cache else None,
            annotations=annotations,
            labels=labels,
            secrets=tuple(secrets),
            report=bool(report[0]) if report else True,
            keep_processes=bool(processes and processes[0] == "keep"),
            all_outputs=not (stored and stored[0] == "needed"),
        )


@dataclass(slots=True, kw_only=True)
class _Shared:
    names: set[str]
    functions: Mapping[str, FunctionFacts]
    imports: Mapping[str, Loc]
    parameters: set[str]
    star: bool
    constants: Mapping[str, str] = field(default_factory=dict)
    imports_bound: Mapping[str, str] = field(default_factory=dict)
    seeds: Mapping[str, Loc] = field(default_factory=dict)
    _closures: dict[str, FunctionFacts] = field(default_factory=dict)

    def closure(self, name: str) -> FunctionFacts:
        """What calling ``name`` may do, through every shared function it uses."""
        cached = self._closures.get(name)
        if cached is not None:
            return cached
        seen = {name}
        pending = [name]
        reads: dict[str, Loc] = {}
        writes: dict[str, Loc] = {}
        mutates: dict[str, Loc] = {}
        seeds: dict[str, Loc] = {}
        files: list[FileFact] = []
        while pending:
            facts = self.functions[pending.pop()]
            for var, loc in facts.reads.items():
                reads.setdefault(var, loc)
                if var in self.functions and var not in seen:
                    seen.add(var)
                    pending.append(var)
            for var, loc in facts.writes.items():
                writes.setdefault(var, loc)
            for var, loc in facts.mutates.items():
                mutates.setdefault(var, loc)
            # globals it passes to a function that changes them (``add_col(data)`` inside)
            for var, (loc, _) in _call_mutations(list(facts.calls), self.functions).items():
                if var in facts.reads:
                    mutates.setdefault(var, loc)
            for var, loc in facts.seeds.items():
                seeds.setdefault(var, loc)
            files.extend(facts.files)
        result = FunctionFacts(
            reads=reads, writes=writes, mutates=mutates, seeds=seeds, files=tuple(files)
        )
        self._closures[name] = result
        return result


def _argument_names(call: CallFact, callee: FunctionFacts, changed: set[str]) -> set[str]:
    """The names passed to ``callee`` in the parameters it changes."""
    found: set[str] = set()
    for i, names in enumerate(call.args):
        param = callee.params[i] if i < len(callee.params) else callee.vararg
        if param is not None and param in changed:
            found |= names
    for key, names in call.keywords.items():
        if key in changed:
            found |= names
    return found


def _changed_parameters(functions: Mapping[str, FunctionFacts]) -> dict[str, set[str]]:
    """Which parameters each function changes in place, directly or not.

    A parameter passed on to a function that changes it counts too: a fixed point over the
    call graph of the notebook's functions.
    """
    changed = {name: set(facts.param_mutates) for name, facts in functions.items()}
    progress = True
    while progress:
        progress = False
        for name, facts in functions.items():
            own = {*facts.params, *([facts.vararg] if facts.vararg else [])}
            for call in facts.calls:
                callee = functions.get(call.callee)
                if callee is None:
                    continue
                passed = _argument_names(call, callee, changed[call.callee]) & own
                if not passed <= changed[name]:
                    changed[name] |= passed
                    progress = True
    return changed


def _call_mutations(
    calls: list[CallFact], functions: Mapping[str, FunctionFacts]
) -> dict[str, tuple[Loc, str]]:
    """Names a block's calls change in place through notebook functions: name -> (where, via)."""
    if not any(call.callee in functions for call in calls):
        return {}
    changed = _changed_parameters(functions)
    found: dict[str, tuple[Loc, str]] = {}
    for call in calls:
        callee = functions.get(call.callee)
        if callee is None or not changed[call.callee]:
            continue
        for name in sorted(_argument_names(call, callee, changed[call.callee])):
            found.setdefault(name, (call.loc, call.callee))
    return found


def _import_target(stmt: str | None) -> str | None:
    """What the name an import statement binds refers to (``import os.path`` binds ``os``)."""
    if stmt is None:
        return None
    node = ast.parse(stmt).body[0]
    if isinstance(node, ast.ImportFrom):
        return f"{'.' * node.level}{node.module or ''}:{node.names[0].name}"
    assert isinstance(node, ast.Import)
    alias = node.names[0]
    return alias.name if alias.asname else alias.name.split(".")[0]


def _imported_module(stmt: str) -> str:
    """The top-level module of a one-name import statement (`_Analysis.imports`)."""
    node = ast.parse(stmt).body[0]
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0]
    assert isinstance(node, ast.Import)
    return node.names[0].name.split(".")[0]


def _setting_tags(tags: CellTags) -> list[str]:
    found = [f"prev:{n}" for n in tags.prev]
    found += [f"image:{tags.image}"] if tags.image is not None else []
    found += [f"limit:{k}:{v}" for k, v in tags.limits]
    found += [f"cache:{str(tags.cache).lower()}"] if tags.cache is not None else []
    found += [f"annotation:{k}:{v}" for k, v in tags.annotations]
    found += [f"label:{k}:{v}" for k, v in tags.labels]
    found += [f"secret:{v}" for v in tags.secrets]
    found += [f"report:{str(tags.report).lower()}"] if tags.report is not None else []
    if tags.keep_processes is not None:
        found += ["processes:keep" if tags.keep_processes else "processes:stop"]
    return found


def _install_hint(module: str) -> str:
    dist = pip_name(module)
    if not dist:
        return (
            f"'{module}' is a namespace shared by many distributions: install the one that "
            f"provides the '{module}.' submodule you import (google.protobuf comes from "
            "protobuf), or add a `%pip install` line"
        )
    return f"install it (pip install {dist}) or add a `%pip install {dist}` line"


def _first(name: str, *maps: Mapping[str, Loc]) -> Loc | None:
    for mapping in maps:
        if name in mapping:
            return mapping[name]
    return None


def _find_cycle(stuck: list[str], deps: Mapping[str, set[str]]) -> list[str]:
    stuck_set = set(stuck)
    path: list[str] = []
    node = stuck[0]
    while node not in path:
        path.append(node)
        node = min((u for u in deps[node] if u in stuck_set), key=stuck.index)
    cycle = path[path.index(node) :]
    return list(reversed(cycle))


def _literal(node: ast.expr) -> tuple[JsonValue] | None:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return (value,) if _is_json(value) else None


def _is_json(value: object) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _metric_names(stmt: ast.stmt) -> list[str] | None:
    if not isinstance(stmt, ast.Expr):
        return None
    value = stmt.value
    if isinstance(value, ast.Name):
        return [value.id]
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "print"
        and not value.keywords
        and value.args
        and all(isinstance(a, ast.Name) for a in value.args)
    ):
        return [a.id for a in value.args if isinstance(a, ast.Name)]
    return None


def _markdown_text(source: str, path: Path) -> str:
    """Return a markdown cell's text as Jupyter shows it.

    In a percent script the text is commented out (``# # Title``) or, for a module
    docstring at the top, a string literal; both are undone here.
    """
    if path.suffix == ".ipynb":
        return source.strip("\n")
    text = source.strip()
    if text[:3] in ('"""', "'''"):
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            value = None
        if isinstance(value, str):
            return value.strip("\n")
    lines = []
    for line in source.splitlines():
        if line.startswith("# "):
            line = line[2:]
        elif line.startswith("#"):
            line = line[1:]
        lines.append(line)
    return "\n".join(lines).strip("\n")
