"""The ``cellpipe reproduce`` document: a run re-run from its start snapshot, compared.

Owns: `reproduce_document` (every step output's digest, original and reproduced; the metrics;
how the environment changed) and `environment_changes`.

Must not depend on: api, cli, ui.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def environment_changes(recorded: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """Say how the environment ``now`` differs from the one a run ``recorded``."""
    if not recorded:
        return ["the run recorded no environment"]
    changes = []
    if recorded.get("python") != now["python"]:
        changes.append(f"python {recorded.get('python')} -> {now['python']}")
    old, new = recorded.get("packages", {}), now["packages"]
    for name in sorted({*old, *new}):
        if old.get(name) != new.get(name):
            changes.append(f"{name} {old.get(name, '(absent)')} -> {new.get(name, '(absent)')}")
    return changes


def reproduce_document(
    run: Any,
    report: Any,
    original: dict[str, Any],
    folder: Path,
    environment: list[str],
) -> dict[str, Any]:
    """Return the ``cellpipe reproduce --json`` document, output by output.

    Args:
        run: the original run's record.
        report: the reproduction's run report (``report.run``, ``report.steps``).
        original: step -> the original step run record.
        folder: where the start snapshot was restored and run.
        environment: how the environment differs (`environment_changes`).
    """
    from cellpipe.views.runs import unread_outputs

    # Values no later step read (a timestamp, a last step's result) are compared too, and
    # count in the verdict; they are marked so a difference there is easy to judge.
    unread = unread_outputs(list(original.values()), run.metrics)
    steps = []
    all_same = True
    for name, old in original.items():
        new = report.steps.get(name)
        outputs = []
        for variable in sorted({*old.outputs, *(new.outputs if new else {})}):
            a = old.outputs.get(variable)
            b = new.outputs.get(variable) if new else None
            same = a is not None and b is not None and a.digest == b.digest
            all_same = all_same and same
            outputs.append(
                {
                    "variable": variable,
                    "original": a.digest if a else None,
                    "reproduced": b.digest if b else None,
                    "identical": same,
                    "read_downstream": variable not in unread.get(name, ()),
                }
            )
        steps.append(
            {
                "step": name,
                "original_status": old.status.value,
                "reproduced_status": new.status.value if new else None,
                "identical": all(o["identical"] for o in outputs),
                "outputs": outputs,
            }
        )
    metrics = []
    for name in sorted({*run.metrics, *report.run.metrics}):
        a, b = run.metrics.get(name), report.run.metrics.get(name)
        metrics.append({"name": name, "original": a, "reproduced": b, "identical": a == b})
    return {
        "run_id": run.run_id,
        "reproduced_run": report.run.run_id,
        "reproduced_status": report.run.status.value,
        "folder": str(folder.resolve()),
        "identical": all_same and report.run.status.value == "succeeded",
        "steps": steps,
        "metrics": metrics,
        "environment_changes": environment,
    }
