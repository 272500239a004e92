"""The ``cellpipe run`` command: run a notebook's pipeline locally, with live progress.

Owns: the run command's options, its progress view (a live table of step states on a
terminal, one line per event when piped, one JSON object per line with ``--json``) and the
summary of failed steps.

Invariants: the command is a thin shell over `cellpipe.api.run_notebook`; with ``--json``
stdout carries only JSON lines, the last one being the run summary (``run_id``, ``status``,
``metrics``); exit status 0 when the run succeeded, 1 when a step failed, 2 for definition or
parameter errors (nothing ran), 130 when cancelled with Ctrl-C.

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from cellpipe.cli import render
from cellpipe.cli._loading import NOTEBOOK_HELP, check_path
from cellpipe.views.live_lines import ProgressLines, reason_text

if TYPE_CHECKING:
    from cellpipe.runner._bare import BareServer
    from cellpipe.runner.events import Event
    from cellpipe.runner.orchestrate import RunReport

DESCRIPTION = """\
Run the notebook's pipeline on this machine. Independent steps run in parallel, each in its own
process with exactly its inputs; values pass through the content-addressed store in .cellpipe/
beside the notebook. A step whose code, parameters it reads, inputs and files read are
unchanged is not run again: its outputs come from the cache. Run again after a failure or Ctrl-C
and the finished steps are reused."""

EPILOG = """\
examples:
  cellpipe run train.ipynb                     run, reusing every cached step
  cellpipe run train.ipynb -p MAX_DEPTH=6      override a parameter (typed as declared)
  cellpipe run train.ipynb --from split        re-run `split` and everything after it
  cellpipe run train.ipynb --only evaluate     run one step, inputs from the cache
  cellpipe run train.ipynb --json | jq .       one JSON object per event, then the summary"""

STATUS_OF = {
    "StepStarted": "running",
    "StepSucceeded": "succeeded",
    "StepCached": "cached",
    "StepFailed": "failed",
    "StepSkipped": "skipped",
    "StepCancelled": "cancelled",
}


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add the ``run`` command to the CLI."""
    parser = subparsers.add_parser(
        "run",
        parents=parents,
        help="run the pipeline locally: parallel, isolated, cached, resumable",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebook", metavar="NOTEBOOK", help=NOTEBOOK_HELP)
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a pipeline parameter (repeatable); parsed to the declared type",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        default=None,
        help="steps to run at once (default: all cores)",
    )
    parser.add_argument("--no-cache", action="store_true", help="re-run every step")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="reuse cached steps without checking their cellpipe.data sources for changes",
    )
    parser.add_argument(
        "--from", dest="from_step", metavar="STEP", help="re-run STEP and every step after it"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="STEP",
        help="run just STEP (repeatable); its inputs must be in the cache",
    )
    parser.add_argument(
        "--executor",
        choices=["fork", "spawn", "inprocess"],
        default=None,
        help="how step processes start: fork from a warm process (default on Linux), "
        "spawn a fresh interpreter per step, or run in this process (debugging)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per event, then the summary"
    )
    parser.set_defaults(handler=run_cmd)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_cmd(args: argparse.Namespace) -> int:
    """Run the notebook and render the progress and the outcome."""
    path = check_path(args.notebook)
    # `cellpipe.cli.main` started the fork server before its own imports (None when the
    # executor is not the fork server); the run adopts it, and main kills it otherwise.
    bare: BareServer | None = getattr(args, "bare_server", None)
    if bare is not None:
        _prepare_shell(bare, path)
    return _run(args, bare)


def _prepare_shell(bare: BareServer, path: Path) -> None:
    """Let the early server build its IPython shell now if any code cell may need one.

    A quick look at the raw cells (the run checks the pipeline itself later): importing
    IPython takes the server about 0.13 s, which then overlaps this process's imports
    instead of delaying the first step. A cell with magics counts as needing the shell.
    """
    from cellpipe.errors import CellpipeError
    from cellpipe.notebook.magics import has_ipython_syntax
    from cellpipe.notebook.parse import CODE, read_notebook
    from cellpipe.runner.jobs import code_needs_shell

    try:
        cells = [c.source for c in read_notebook(path).cells if c.kind == CODE]
    except CellpipeError:
        return  # the run reports it
    bare.prepare(shell=any(has_ipython_syntax(c) or code_needs_shell(c) for c in cells))


def _run(args: argparse.Namespace, bare: BareServer | None) -> int:
    from cellpipe.api import run_notebook
    from cellpipe.runner.orchestrate import RunCancelled

    view: _JsonView | _TextView = (
        _JsonView(sys.stdout) if args.json else _TextView(sys.stdout, sys.stderr)
    )
    try:
        report = run_notebook(
            args.notebook,
            text_params=args.param,
            jobs=args.jobs,
            use_cache=not args.no_cache,
            from_step=args.from_step,
            only=args.only,
            executor=args.executor,
            sink=view.on_event,
            bare_server=bare,
            offline=args.offline,
        )
    except RunCancelled as cancelled:
        view.close()
        view.summary(cancelled.report)
        sys.stderr.write("cancelled (Ctrl-C): run the same command again to resume\n")
        return 130
    finally:
        view.close()
    view.summary(report)
    status = report.run.status.value
    if status == "succeeded":
        return 0
    if status == "cancelled":
        return 130
    return 1


def _event_document(event: Event) -> dict[str, Any] | None:
    kind = type(event).__name__
    if kind == "StepOutput":
        return None  # as "output" lines, by `_JsonView`
    if kind in STATUS_OF:
        doc: dict[str, Any] = {
            "event": "step",
            "step": getattr(event, "step", None),
            "status": STATUS_OF[kind],
        }
        for attr in ("reason", "duration_s", "error", "log_path"):
            if hasattr(event, attr):
                doc[attr] = getattr(event, attr)
        outputs = getattr(event, "outputs", None)
        if outputs:
            doc["outputs"] = {k: v.digest for k, v in outputs.items()}
        result = getattr(event, "result", None)
        if doc["status"] == "failed" and result is not None:
            doc["traceback"] = result.traceback
            doc["hint"] = result.hint
        return doc
    if kind == "RunStarted":
        return {
            "event": "run",
            "step": None,
            "status": "running",
            "run_id": getattr(event, "run_id", ""),
            "steps": list(getattr(event, "steps", ())),
        }
    return None


class _JsonView:
    r"""One JSON object per event; a step's printed output as ``output`` events, one per line.

    A line rewritten with ``\r`` (a progress bar) is one ``output`` event with its final
    text; a step's last unfinished line is sent before its terminal event.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lines: dict[str, ProgressLines] = {}

    def _write(self, doc: dict[str, Any]) -> None:
        self.stream.write(render.dumps(doc, default=str) + "\n")
        self.stream.flush()

    def _output(self, step: str, stream: str, lines: list[str]) -> None:
        for line in lines:
            self._write(
                {
                    "event": "output",
                    "step": step,
                    "status": "running",
                    "stream": stream,
                    "text": line,
                }
            )

    def on_event(self, event: Event) -> None:
        kind = type(event).__name__
        step = getattr(event, "step", None)
        if kind == "StepOutput" and step is not None:
            buffer = self.lines.setdefault(step, ProgressLines())
            lines = buffer.feed(getattr(event, "text", ""))
            self._output(step, getattr(event, "stream", "log"), lines)
            return
        if kind in STATUS_OF and kind != "StepStarted" and step in self.lines:
            self._output(step, "log", self.lines.pop(step).flush())
        doc = _event_document(event)
        if doc is not None:
            self._write(doc)

    def close(self) -> None:
        return

    def summary(self, report: RunReport) -> None:
        run = report.run
        doc = {
            "event": "summary",
            "step": None,
            "run_id": run.run_id,
            "status": run.status.value,
            "metrics": dict(run.metrics),
            "parameters": dict(run.parameters),
            "steps": {
                name: {"status": rec.status.value, "reason": rec.cache_reason}
                for name, rec in report.steps.items()
            },
            "notebook": str(report.notebook) if report.notebook else None,
            "secrets_left_out": list(report.secrets_left_out),
            "failures": [
                {
                    "step": f.step,
                    "error": f.error,
                    "traceback": f.traceback,
                    "hint": f.hint,
                    "log_path": f.log_path,
                }
                for f in report.failures
            ],
        }
        self.stream.write(render.dumps(doc, default=str) + "\n")
        self.stream.flush()


class _TextView:
    """Lines per event; on a terminal a live table of every step's state."""

    SYMBOL: ClassVar[dict[str, str]] = {
        "running": "▶",
        "succeeded": "✓",
        "cached": "↺",
        "failed": "✗",
        "skipped": "-",
        "cancelled": "■",
    }
    STYLE: ClassVar[dict[str, str]] = {
        "running": "cyan",
        "succeeded": "green",
        "cached": "blue",
        "failed": "bold red",
        "skipped": "yellow",
        "cancelled": "yellow",
    }

    def __init__(self, stream: TextIO, err: TextIO) -> None:
        self.out = render.Output(stream)
        self.err = err
        self.states: dict[str, tuple[str, str, float]] = {}
        # The lines of each step's output that the summary must not repeat (its traceback
        # and the hint of a CellpipeError, which Python prints with the exception).
        self.shown: dict[str, set[str]] = {}
        # Each step's output as lines: a line rewritten with \r (tqdm) is one line.
        self.lines: dict[str, ProgressLines] = {}
        self.why: dict[str, str] = {}  # why a step runs (its cache decision, in words)
        self.live: Any = None
        self.console: Any = None
        if render.is_terminal(stream):
            from rich.console import Console
            from rich.live import Live

            self.console = Console(file=stream, highlight=False)
            self.live = Live(console=self.console, refresh_per_second=8, transient=False)
            self.live.start()

    def _table(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_header=True, header_style="bold")
        table.add_column("")
        table.add_column("step")
        table.add_column("state")
        table.add_column("time", justify="right")
        table.add_column("why")
        now = time.monotonic()
        for name, (state, detail, since) in self.states.items():
            elapsed = f"{now - since:.1f}s" if state == "running" else detail.split("|")[0]
            why = detail.split("|", 1)[1] if "|" in detail else ""
            table.add_row(
                Text(self.SYMBOL.get(state, "?"), style=self.STYLE.get(state, "")),
                name,
                Text(state, style=self.STYLE.get(state, "")),
                elapsed,
                Text(why, style="dim"),
            )
        # The line each running step is rewriting (a progress bar), updated in place.
        progress = [
            Text(f"[{name}] {buffer.current}", style="dim", no_wrap=True, overflow="ellipsis")
            for name, buffer in self.lines.items()
            if buffer.current and self.states.get(name, ("",))[0] == "running"
        ]
        return Group(table, *progress) if progress else table

    def on_event(self, event: Event) -> None:
        kind = type(event).__name__
        if kind == "RunStarted":
            for name in getattr(event, "steps", ()):
                self.states[name] = ("waiting", "|", time.monotonic())
            self.out.line(
                f"run {getattr(event, 'run_id', '')}: {render.plural(len(self.states), 'step')}"
            )
        elif kind == "StepOutput":
            self._output(getattr(event, "step", ""), getattr(event, "text", ""))
        elif kind in STATUS_OF:
            self._state(event, STATUS_OF[kind])
        if self.live is not None:
            self.live.update(self._table())

    def _output(self, step: str, text: str, *, final: bool = False) -> None:
        buffer = self.lines.setdefault(step, ProgressLines())
        lines = buffer.feed(text)
        if final:
            lines += buffer.flush()
        for line in lines:
            if line.startswith("Traceback (most recent call last):") or "hint: " in line:
                self.shown.setdefault(step, set()).add(line.strip())
            if self.console is not None:
                self.console.print(f"[{step}] {line}", markup=False, highlight=False, style="dim")
            else:
                self.out.line(f"  [{step}] {line}")

    def _state(self, event: Event, state: str) -> None:
        step = getattr(event, "step", "")
        if state != "running":
            self._output(step, "", final=True)  # a last line without a newline
        duration = getattr(event, "duration_s", None)
        reason = getattr(event, "reason", "") or getattr(event, "error", "") or ""
        if state == "running":
            reason = self.why[step] = reason_text(reason)
        elif state == "succeeded":
            reason = self.why.get(step, "")
        shown = f"{duration:.1f}s" if isinstance(duration, float) else ""
        self.states[step] = (state, f"{shown}|{reason}", time.monotonic())
        if self.live is None:
            text = f"{self.SYMBOL.get(state, '?')} {step} {state}"
            if shown:
                text += f" in {shown}"
            if reason and state in ("running", "cached", "skipped", "failed"):
                text += f" ({reason})"
            self.out.line(text)

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.stop()
            self.live = None

    def summary(self, report: RunReport) -> None:
        run = report.run
        counts: dict[str, int] = {}
        for rec in report.steps.values():
            counts[rec.status.value] = counts.get(rec.status.value, 0) + 1
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        self.out.line("")
        self.out.line(f"run {run.run_id} {run.status.value} ({parts})")
        if run.metrics:
            self.out.line(
                "metrics: " + ", ".join(f"{k}={_short(v)}" for k, v in run.metrics.items())
            )
        if report.notebook:
            self.out.line(f"executed notebook: {report.notebook}")
        render.secrets_left_out(report.secrets_left_out, self.out)
        for failure in report.failures:
            # Printed once: a traceback the step's output showed is not repeated, nor a hint
            # already shown above (in that traceback or in the one printed here).
            self.err.write(f"\nstep '{failure.step}' failed: {failure.error}\n")
            shown = self.shown.get(failure.step, set())
            if failure.traceback and "Traceback (most recent call last):" not in shown:
                self.err.write(failure.traceback.rstrip("\n") + "\n")
                shown = shown | {line.strip() for line in failure.traceback.splitlines()}
            if failure.hint and f"hint: {failure.hint}" not in shown:
                self.err.write(f"  hint: {failure.hint}\n")
            if failure.log_path:
                self.err.write(f"  log: {failure.log_path}\n")
        if report.failures:
            self.err.write(
                "\nFix the step and run the same command again: finished steps are reused.\n"
            )


def _short(value: object) -> str:
    return render.short_value(value)
