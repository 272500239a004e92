"""``cellpipe submit``: run (or upload) a pipeline on a Kubeflow Pipelines endpoint.

Owns: the ``submit`` command's arguments and its report.

Invariants: a notebook is compiled exactly as ``cellpipe compile`` would (validated, same
options); a ``.yaml`` file is sent as it is (``-p`` values become run arguments then). Only
kfp's own client talks to the endpoint.

Must not depend on: the runner, other command modules.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from cellpipe.cli import render
from cellpipe.cli._kfp import add_compile_options, compile_notebook
from cellpipe.errors import CompileError

DESCRIPTION = """\
Send a pipeline to a Kubeflow Pipelines endpoint through kfp's client: start a run in an
experiment, or with --upload-only upload it as a pipeline (a new version when a pipeline of
that name exists). NOTEBOOK is compiled first, as `cellpipe compile` does; a compiled .yaml
file is sent unchanged.
"""

EPILOG = """\
examples:
  kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80
  cellpipe submit train.ipynb --host http://localhost:8080 --experiment wine -p C=0.5
  cellpipe submit train.yaml --host http://localhost:8080 --upload-only"""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add the ``submit`` command to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
        parents: parsers carrying the options every command accepts.
    """
    parser = subparsers.add_parser(
        "submit",
        parents=parents,
        help="run or upload the pipeline on a Kubeflow Pipelines endpoint",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebook", metavar="NOTEBOOK|FILE.yaml", help="what to send")
    parser.add_argument("--host", required=True, metavar="URL", help="the KFP endpoint")
    parser.add_argument("--experiment", metavar="NAME", help="the run's experiment")
    parser.add_argument("--run-name", metavar="NAME", help="the run (or version) name")
    parser.add_argument("--namespace", metavar="NS", help="Kubernetes namespace (multi-user)")
    parser.add_argument(
        "--upload-only", action="store_true", help="upload a pipeline version, do not run"
    )
    add_compile_options(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(handler=submit_cmd)


def submit_cmd(args: argparse.Namespace) -> int:
    """Run ``cellpipe submit``.

    Returns:
        0 when the endpoint accepted the pipeline.

    Raises:
        CellpipeError: for compile errors or an endpoint that refuses.
    """
    from cellpipe.kfp.submit import submit_package

    arguments: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="cellpipe-submit-") as tmp:
        if args.notebook.endswith((".yaml", ".yml")):
            package = Path(args.notebook)
            name = args.name or _package_name(package)
            arguments = _yaml_arguments(args.params)
        else:
            compiled = compile_notebook(args)
            package = Path(tmp) / f"{compiled.name}.yaml"
            package.write_text(compiled.text, encoding="utf-8")
            name = compiled.name
        result = submit_package(
            package,
            host=args.host,
            pipeline_name=name,
            experiment=args.experiment,
            run_name=args.run_name,
            arguments=arguments,  # type: ignore[arg-type]
            namespace=args.namespace,
            upload_only=args.upload_only,
        )
    if args.json:
        render.write_json({"ok": True, **result.to_json()}, sys.stdout)
    else:
        ids = ", ".join(f"{k} {v}" for k, v in sorted(result.ids.items()))
        print(f"submitted {name} to {result.host}: {result.kind} ({ids})")
        for message in result.messages:
            print(f"  {message}")
    return 0


def _package_name(package: Path) -> str:
    from cellpipe.kfp.yaml import load_yaml

    try:
        documents = load_yaml(package.read_text(encoding="utf-8"))
        return str(documents[0]["pipelineInfo"]["name"])
    except (OSError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise CompileError(
            f"{package} is not a compiled pipeline ({type(exc).__name__}: {exc})",
            hint="pass a notebook, or a file written by `cellpipe compile`",
        ) from exc


def _yaml_arguments(items: list[str]) -> dict[str, object]:
    from cellpipe.pipeline.parameters import parse_assignments, parse_untyped

    return {name: parse_untyped(name, raw) for name, raw in parse_assignments(items).items()}
