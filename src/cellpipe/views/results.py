"""What the Python API's service functions return: a document with its text, HTML and pandas.

Owns: the result classes of `cellpipe.check`, `runs`, `show`, `compare`, `why`, `logs`,
`lineage`, `models` and `compile`. Each holds the document the matching command prints with
``--json`` and renders it:

- ``to_dict()``: exactly that ``--json`` document (a deep copy);
- ``repr()``: a short text;
- ``_repr_html_()``: escaped HTML tables (Jupyter, VS Code and nbclient show it); lineage
  draws its graph with `cellpipe.views.graph.graph_svg`;
- ``to_pandas()`` where the result is a table (pandas is imported then, and a clear
  `MissingDependencyError` says how to install it when it is missing).

Invariants: pure views of the documents: nothing here opens a store; every value in the HTML
is escaped.

Must not depend on: api, cli, ui.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from cellpipe.errors import CellpipeError, MissingDependencyError, Problem
from cellpipe.views import html as h
from cellpipe.views.format import duration_text, plural, short_value, size_text, when_text

if TYPE_CHECKING:
    import pandas as pd

    from cellpipe.pipeline import Pipeline
    from cellpipe.storage.lineage import LineageGraph

__all__ = [
    "CheckResult",
    "Comparison",
    "CompileResult",
    "LineageView",
    "ModelDetail",
    "ModelList",
    "RunDetail",
    "RunList",
    "StepLog",
    "View",
    "WhyResult",
]


def _pandas(feature: str) -> Any:
    try:
        import pandas
    except ImportError:
        raise MissingDependencyError("pandas", feature=feature) from None
    return pandas


def ui_link_html(url: str) -> str:
    """A link to a page of the running web UI, for the notebook views (escaped)."""
    return (
        f"<p>in the web UI: <a href='{escape(url, quote=True)}' target='_blank' "
        f"rel='noopener noreferrer'>{escape(url)}</a></p>"
    )


class View:
    """A service function's result: its ``--json`` document and the ways to show it.

    Args:
        document: the document, as the command prints it with ``--json``.
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = dict(document)

    def to_dict(self) -> dict[str, Any]:
        """Return the ``--json`` document of the matching command (a copy)."""
        return copy.deepcopy(self._document)

    def __getitem__(self, key: str) -> Any:
        return self._document[key]

    def __repr__(self) -> str:
        return f"<cellpipe.{type(self).__name__}>"

    def _repr_html_(self) -> str:
        return h.section(repr(self))


# -- check -------------------------------------------------------------------------------------


class CheckResult(View):
    """What `cellpipe.check` found: a valid pipeline or every problem (``cellpipe check``).

    Attributes:
        ok: True when the pipeline is valid.
        pipeline: the pipeline when valid, else None.
        error: what was wrong, when it is not valid.
        warnings: the problems that do not stop it.
    """

    def __init__(
        self,
        document: Mapping[str, Any],
        pipeline: Pipeline | None = None,
        *,
        error: CellpipeError | None = None,
        warnings: Sequence[Problem] = (),
    ) -> None:
        super().__init__(document)
        self.ok = bool(document.get("ok"))
        self.pipeline = pipeline
        self.error = error
        self.warnings = tuple(warnings)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The definition errors, each with ``code``, ``message``, ``cell``, ``line``, ``hint``."""
        return list(self._document.get("errors", []))

    def __repr__(self) -> str:
        if self.ok:
            steps = [s["name"] for s in self._document.get("steps", [])]
            return (
                f"<cellpipe check {self._document.get('name')}: ok, "
                f"{plural(len(steps), 'step')}: {' -> '.join(steps)}>"
            )
        lines = [
            f"<cellpipe check {self._document.get('path')}: {plural(len(self.errors), 'error')}"
        ]
        lines.extend(f"  {_problem_text(e)}" for e in self.errors)
        return "\n".join(lines) + ">"

    def _repr_html_(self) -> str:
        if self.ok and self.pipeline is not None:
            from cellpipe.views.pipeline import pipeline_html

            return pipeline_html(self.pipeline)
        rows = [
            [e.get("cell") or "-", e.get("line") or "-", e.get("message"), e.get("hint") or "-"]
            for e in self.errors
        ]
        return h.section(
            f"{self._document.get('path')}: {plural(len(rows), 'error')}",
            h.table(["cell", "line", "problem", "hint"], rows),
        )


def _problem_text(problem: Mapping[str, Any]) -> str:
    where = ", ".join(f"{k} {problem[k]}" for k in ("cell", "line") if problem.get(k) is not None)
    text = f"{where}: {problem.get('message')}" if where else str(problem.get("message"))
    return text + (f" (hint: {problem['hint']})" if problem.get("hint") else "")


# -- runs --------------------------------------------------------------------------------------


def _run_row(run: Mapping[str, Any]) -> list[Any]:
    return [
        run["run_id"],
        run["status"],
        when_text(run["started_at"]),
        duration_text(run["duration_s"]),
    ]


class RunList(View):
    """The runs `cellpipe.runs` found, newest first (``cellpipe runs``)."""

    @property
    def runs(self) -> list[dict[str, Any]]:
        """The runs' documents."""
        return list(self._document["runs"])

    def __len__(self) -> int:
        return len(self._document["runs"])

    def parameter_names(self) -> list[str]:
        """Every parameter of any run listed, in the order they first appear."""
        return list(dict.fromkeys(n for r in self._document["runs"] for n in r["parameters"]))

    def rows(self, width: int = 24) -> tuple[list[str], list[list[str]]]:
        """Return the table ``cellpipe runs`` prints: columns and text cells."""
        params = self.parameter_names()
        rows = []
        for run in self._document["runs"]:
            metrics = ", ".join(
                f"{k}={short_value(v, width=width)}" for k, v in run["metrics"].items()
            )
            rows.append(
                [
                    *_run_row(run),
                    *[
                        short_value(run["parameters"][p], width=width)
                        if p in run["parameters"]
                        else "-"
                        for p in params
                    ],
                    metrics or "-",
                ]
            )
        return ["run", "status", "started (UTC)", "took", *params, "metrics"], rows

    def __repr__(self) -> str:
        runs = self._document["runs"]
        lines = [f"<cellpipe runs: {plural(len(runs), 'run')}"]
        for run in runs[:10]:
            metrics = ", ".join(
                f"{k}={short_value(v, width=16)}" for k, v in run["metrics"].items()
            )
            lines.append(f"  {run['run_id']}  {run['status']}  {metrics}".rstrip())
        if len(runs) > 10:
            lines.append(f"  ... and {len(runs) - 10} more")
        return "\n".join(lines) + ">"

    def _repr_html_(self) -> str:
        columns, rows = self.rows()
        return h.section(f"{plural(len(rows), 'run')}", h.table(columns, rows))

    def to_pandas(self) -> pd.DataFrame:
        """One row per run: id, status, times, then one column per parameter and metric.

        A metric named like a parameter gets the column ``NAME (metric)``.
        """
        pandas = _pandas("runs().to_pandas()")
        params = self.parameter_names()
        records = []
        for run in self._document["runs"]:
            row: dict[str, Any] = {
                "run_id": run["run_id"],
                "status": run["status"],
                "started_at": pandas.Timestamp(run["started_at"]) if run["started_at"] else None,
                "duration_s": run["duration_s"],
                "notebook": run["notebook"],
            }
            row.update({p: run["parameters"].get(p) for p in params})
            for name, value in run["metrics"].items():
                row[f"{name} (metric)" if name in row else name] = value
            records.append(row)
        return pandas.DataFrame.from_records(records)


class RunDetail(View):
    """One run as `cellpipe.show` returns it: parameters, metrics, steps, outputs (``show``).

    Attributes:
        ui_link: the run's page in the project's running web UI (``cellpipe ui``), without
            its token (a notebook's outputs are saved and shared), or None.
    """

    ui_link: str | None = None

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The step runs' documents."""
        return list(self._document["steps"])

    def __repr__(self) -> str:
        d = self._document
        steps = ", ".join(f"{s['step']}={s['status']}" for s in d["steps"])
        metrics = ", ".join(f"{k}={short_value(v, width=16)}" for k, v in d["metrics"].items())
        return f"<cellpipe run {d['run_id']} {d['status']}: {steps}; metrics: {metrics or '-'}>"

    def step_rows(self) -> list[list[str]]:
        """The steps table: step, status, took, cache decision."""
        return [
            [
                s["step"],
                s["status"],
                duration_text(s["duration_s"], 2),
                s["cache_reason"] or "-",
            ]
            for s in self._document["steps"]
        ]

    def output_rows(self) -> list[list[str]]:
        """The outputs table: step, variable, format, size, digest, read downstream."""
        rows = []
        for step in self._document["steps"]:
            for name, ref in step["outputs"].items():
                read = "no" if name in step["outputs_not_read_downstream"] else "yes"
                rows.append(
                    [step["step"], name, ref["serializer"], size_text(ref["size"]),
                     ref["digest"][:19], read]
                )  # fmt: skip
        return rows

    def displayed_rows(self) -> list[list[str]]:
        """The rich outputs table: step, what it displayed (by mime type), files it wrote."""
        rows = []
        for step in self._document["steps"]:
            shown = ", ".join(f"{n} {m}" for m, n in step.get("displayed", {}).items())
            files = ", ".join(f"{f['file']} ({f['change']})" for f in step.get("files_written", []))
            if shown or files:
                rows.append([step["step"], shown or "-", files or "-"])
        return rows

    def _repr_html_(self) -> str:
        d = self._document
        head = f"run {d['run_id']}: {d['status']}"
        parts = [
            h.table(
                ["notebook", "started (UTC)", "took"],
                [[d["notebook"], when_text(d["started_at"]), duration_text(d["duration_s"])]],
            ),
            h.pairs(d["parameters"], title="Parameters"),
            h.pairs(d["metrics"], title="Metrics"),
            h.table(["step", "status", "took", "cache decision"], self.step_rows(), title="Steps"),
            h.table(
                ["step", "variable", "format", "size", "digest", "read downstream"],
                self.output_rows(),
                title="Outputs",
            ),
            h.table(["step", "displayed", "files written"], self.displayed_rows(), title="Shown"),
        ]
        if d.get("error"):
            parts.insert(0, h.preformatted(d["error"]))
        if self.ui_link:
            parts.insert(0, ui_link_html(self.ui_link))
        return h.section(head, *parts)

    def to_pandas(self) -> pd.DataFrame:
        """One row per step run: status, duration, cache decision, outputs, displayed outputs."""
        pandas = _pandas("show().to_pandas()")
        return pandas.DataFrame.from_records(
            [
                {
                    "step": s["step"],
                    "status": s["status"],
                    "duration_s": s["duration_s"],
                    "cache_reason": s["cache_reason"],
                    "source_run": s["source_run"],
                    "outputs": sorted(s["outputs"]),
                    "displayed": sum(s.get("displayed", {}).values()),
                    "files_written": [f["file"] for f in s.get("files_written", [])],
                    "error": s["error"],
                }
                for s in self._document["steps"]
            ]
        )


class Comparison(View):
    """Runs side by side as `cellpipe.compare` returns them (``cellpipe compare``).

    Args:
        document: the ``compare --json`` document.
        presence: section -> name -> in which runs the name is recorded.
    """

    def __init__(
        self,
        document: Mapping[str, Any],
        presence: Mapping[str, Mapping[str, Sequence[bool]]] | None = None,
    ) -> None:
        super().__init__(document)
        self._presence = presence or {}

    def rows(self, section: str, width: int = 40) -> list[tuple[list[str], bool]]:
        """Return a section's rows as text cells (``-`` where a run lacks the name) and differs."""
        found = []
        for row in self._document[section]:
            present = self._presence.get(section, {}).get(row["name"]) or [True] * len(
                row["values"]
            )
            cells = [
                short_value(v, width=width) if p else "-"
                for v, p in zip(row["values"], present, strict=True)
            ]
            found.append(([row["name"], *cells], bool(row["differs"])))
        return found

    def __repr__(self) -> str:
        differs = [
            row["name"]
            for section in ("parameters", "metrics")
            for row in self._document[section]
            if row["differs"]
        ]
        return (
            f"<cellpipe compare {' '.join(self._document['runs'])}: "
            f"differs in {', '.join(differs) or 'nothing'}>"
        )

    def _repr_html_(self) -> str:
        header = ["", *self._document["runs"]]
        parts = []
        for section in ("parameters", "metrics"):
            rows = self.rows(section)
            parts.append(
                h.table(
                    header,
                    [cells for cells, _ in rows],
                    title=f"{section.capitalize()} (differences highlighted)",
                    marked=[d for _, d in rows],
                )
            )
        return h.section(f"compare {plural(len(self._document['runs']), 'run')}", *parts)

    def to_pandas(self) -> pd.DataFrame:
        """One row per parameter and metric (index: section, name), one column per run."""
        pandas = _pandas("compare().to_pandas()")
        runs = self._document["runs"]
        records = []
        index = []
        for section in ("parameters", "metrics"):
            for row in self._document[section]:
                index.append((section, row["name"]))
                records.append(
                    {**dict(zip(runs, row["values"], strict=True)), "differs": row["differs"]}
                )
        frame = pandas.DataFrame.from_records(records, columns=[*runs, "differs"])
        frame.index = pandas.MultiIndex.from_tuples(index, names=["section", "name"])
        return frame


class WhyResult(View):
    """A step's cache decision as `cellpipe.why` explains it (``cellpipe why``)."""

    def text(self) -> str:
        """The lines ``cellpipe why`` prints."""
        d = self._document
        lines = [
            f"{d['step']} in run {d['run_id']}: {d['status']}",
            f"  {d['reason'] or 'no cache decision recorded'}",
        ]
        if d["outputs"]:
            unread = set(d["outputs_not_read_downstream"])
            names = [f"{n} (not read downstream)" if n in unread else n for n in d["outputs"]]
            lines.append(f"  outputs: {', '.join(names)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        d = self._document
        fields = {k: short_value(v) for k, v in d["fields"].items()}
        return h.section(
            f"{d['step']} in run {d['run_id']}: {d['status']}",
            h.table(["decision"], [[d["reason"] or "no cache decision recorded"]]),
            h.table(
                ["output", "read downstream"],
                [
                    [n, "no" if n in d["outputs_not_read_downstream"] else "yes"]
                    for n in d["outputs"]
                ],
                title="Outputs",
            ),
            h.pairs(fields, title=f"Cache key {short_value(d['cache_key'])}"),
        )


class StepLog(View):
    """A step's captured stdout and stderr as `cellpipe.logs` returns it (``cellpipe logs``)."""

    @property
    def text(self) -> str:
        """The log text."""
        return str(self._document["log"])

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        d = self._document
        cached = f" (the log of run {d['source_run']})" if d["source_run"] else ""
        return f"<cellpipe logs {d['run_id']} {d['step']}{cached}>\n{self.text}"

    def _repr_html_(self) -> str:
        d = self._document
        cached = f" (the log of run {d['source_run']})" if d["source_run"] else ""
        return h.section(
            f"log of {d['step']} in run {d['run_id']}{cached}", h.preformatted(self.text)
        )


class LineageView(View):
    """A lineage graph as `cellpipe.lineage` returns it (``cellpipe lineage``).

    Args:
        graph: the lineage graph.
    """

    def __init__(self, graph: LineageGraph) -> None:
        super().__init__(graph.to_json())
        self.graph = graph

    def text(self) -> str:
        """The indented text ``cellpipe lineage`` prints."""
        from cellpipe.views.lineage import to_text

        return to_text(self.graph)

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart."""
        from cellpipe.views.lineage import to_mermaid

        return to_mermaid(self.graph)

    def to_dot(self) -> str:
        """The graph in Graphviz dot."""
        from cellpipe.views.lineage import to_dot

        return to_dot(self.graph)

    def __repr__(self) -> str:
        return self.text().rstrip("\n")

    def _repr_html_(self) -> str:
        from cellpipe.views.lineage import to_svg

        return h.section(
            f"lineage of {self.graph.root_kind} {self.graph.root}",
            to_svg(self.graph),
            h.preformatted(self.text()),
        )


# -- models ------------------------------------------------------------------------------------


class ModelList(View):
    """The registered models as `cellpipe.models` lists them (``cellpipe models list``)."""

    def rows(self) -> list[list[str]]:
        """The table ``cellpipe models list`` prints."""
        return [
            [
                m["name"],
                "-" if m["latest"] is None else str(m["latest"]),
                f"{m['versions']} (+{m['archived']} archived)"
                if m.get("archived")
                else str(m["versions"]),
                ", ".join(f"{a}={v}" for a, v in m["aliases"].items()) or "-",
                when_text(m["created_at"]),
                m.get("description") or "-",
            ]
            for m in self._document["models"]
        ]

    COLUMNS = ("model", "latest", "versions", "aliases", "created (UTC)", "description")

    def __repr__(self) -> str:
        models = self._document["models"]
        return f"<cellpipe models: {', '.join(m['name'] for m in models) or 'none'}>"

    def _repr_html_(self) -> str:
        return h.section(
            plural(len(self._document["models"]), "model"), h.table(self.COLUMNS, self.rows())
        )

    def to_pandas(self) -> pd.DataFrame:
        """One row per model, the fields of ``cellpipe models list --json``."""
        pandas = _pandas("models().to_pandas()")
        return pandas.DataFrame.from_records(self.to_dict()["models"])


class ModelDetail(View):
    """One model version as `cellpipe.models(REF)` shows it (``cellpipe models show``)."""

    def __repr__(self) -> str:
        d = self._document
        aliases = f" ({', '.join(d['aliases'])})" if d["aliases"] else ""
        aliases += " [archived]" if d.get("archived") else ""
        where = f"run {d['run_id']}, step {d['step']}" if d["run_id"] else "no lineage"
        return f"<cellpipe model {d['ref']}{aliases}: {d['artifact']['type']}, {where}>"

    def _repr_html_(self) -> str:
        d = self._document
        signature = d.get("signature") or {}
        tensors = [
            [kind, t.get("name"), t.get("datatype"), str(t.get("shape"))]
            for kind in ("inputs", "outputs")
            for t in signature.get(kind, [])
        ]
        return h.section(
            f"model {d['ref']}",
            h.pairs(
                {
                    "aliases": ", ".join(d["aliases"]) or "-",
                    "registered (UTC)": when_text(d["created_at"]),
                    "object": d["artifact"].get("type"),
                    "run": d["run_id"] or "-",
                    "step": d["step"] or "-",
                    "variable": d["variable"] or "-",
                    "description": d["description"] or "-",
                    "archived": "yes" if d.get("archived") else "no",
                }
            ),
            h.pairs(d.get("tags") or {}, title="Tags"),
            h.pairs(d.get("packages") or {}, title="Packages"),
            h.pairs(d["parameters"], title="Parameters"),
            h.pairs(d["metrics"], title="Metrics"),
            h.table(["", "tensor", "datatype", "shape"], tensors, title="Signature"),
            h.table(
                ["version", "registered (UTC)", "aliases"],
                [
                    [v["version"], when_text(v["created_at"]), ", ".join(v["aliases"]) or "-"]
                    for v in d.get("versions", [])
                ],
                title="Versions",
            ),
        )


# -- compile -----------------------------------------------------------------------------------


class CompileResult(View):
    """Where `cellpipe.compile` wrote the KFP YAML (``cellpipe compile --json``).

    Attributes:
        text: the YAML itself.
    """

    def __init__(self, document: Mapping[str, Any], text: str) -> None:
        super().__init__(document)
        self.text = text

    def __repr__(self) -> str:
        d = self._document
        return f"<cellpipe compile {d['pipeline']}: {plural(d['steps'], 'step')} to {d['output']}>"

    def _repr_html_(self) -> str:
        d = self._document
        return h.section(
            repr(self),
            h.pairs({k: d[k] for k in ("output", "pipeline", "steps", "bytes", "image")}),
            h.table(["warning"], [[w] for w in d["warnings"]], title="Warnings"),
        )
