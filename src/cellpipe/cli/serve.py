"""The ``cellpipe serve`` command: registered models over the Open Inference Protocol v2.

Owns: resolving the references against the project's registry (before any port is opened,
so a typo fails at once), saying what is served where, running the server until Ctrl-C, and
``--manifest``: a KServe ``InferenceService`` for a cluster instead of a local server.

Invariants: a thin shell over `cellpipe.api.serve_forever` / `write_kserve_manifest` (the
background server of a notebook is `cellpipe.serve`); ``--json`` prints exactly one JSON
document (what is served, before serving starts; or the manifest written). Ctrl-C is a normal
way to stop the server (exit status 0).

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from typing import Any

from cellpipe.cli import render
from cellpipe.cli._loading import PROJECT_HELP, port_number

TOKEN_VARIABLE = "CELLPIPE_SERVE_TOKEN"

DESCRIPTION = """\
Serve registered model versions over the KServe Open Inference Protocol v2 REST API: health
(/v2/health/live, /v2/health/ready), server and model metadata (/v2, /v2/models/NAME), and
inference (POST /v2/models/NAME/infer) with JSON tensors or the binary tensor extension, so
standard clients (tritonclient, KServe's) work unchanged; with --grpc-port, its gRPC API too.
/v2/models/NAME is the version the reference names, and a running server follows it: NAME@ALIAS
moves with the alias, NAME with new registrations (NAME:N stays). Other versions are reachable at
/v2/models/NAME/versions/N only with --all-versions. Every reference is resolved and loaded before
the port opens; several worker processes then share it. Prometheus metrics are at /metrics. With
--manifest, write a KServe InferenceService for a cluster instead."""

EPILOG = """\
examples:
  cellpipe serve wine@production               serve the version the alias points at
  cellpipe serve wine:2 iris --port 9000       several models at once
  cellpipe serve wine@production --json        say what is served as JSON, then serve
  cellpipe serve wine@production --port 0 --workers 1 --log-level info
                                               any free port (announced), one process, access log
  CELLPIPE_SERVE_TOKEN=$(openssl rand -hex 16) cellpipe serve wine@production --host 0.0.0.0
                                               on every interface, bearer token required
  cellpipe serve wine@production --grpc-port 8081   the OIP gRPC API too
  cellpipe serve wine@production --manifest wine-isvc.yaml --storage-uri s3://models/wine/2
  cellpipe serve wine:2 --manifest wine-isvc.yaml --predict-proba --kserve-version v0.15.2

then, from another terminal:
  curl -s localhost:8080/v2/models/wine
  curl -s localhost:8080/v2/models/wine/infer -H 'Content-Type: application/json' \\
    -d '{"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64",
         "data": [13.2, 1.78, 2.14, 11.2, 100, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050]}]}'"""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add the ``serve`` command to the CLI."""
    parser = subparsers.add_parser(
        "serve",
        parents=parents,
        help="serve registered models over the Open Inference Protocol v2 (KServe, Triton)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "refs",
        nargs="+",
        metavar="REF",
        help="a model: NAME (newest version), NAME:VERSION, NAME@ALIAS",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"
    )
    parser.add_argument(
        "--port", type=port_number, default=8080, help="TCP port (default 8080; 0: any free port)"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="info: one access-log line per request (method, path, status, latency, request "
        "id); warning (default): no per-request logging",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="server processes sharing the port (default: the usable CPUs, at most 4; "
        "models are loaded once, before the processes fork)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' on every request but the health probes; "
        "prefer the CELLPIPE_SERVE_TOKEN environment variable: a token on the command line "
        "is visible to every user in `ps`",
    )
    parser.add_argument(
        "--max-body",
        type=_byte_size,
        default=None,
        metavar="BYTES",
        help="largest request body, as sent and once decompressed (default 64MiB; "
        "suffixes KiB, MiB, GiB); larger bodies get 413",
    )
    parser.add_argument(
        "--read-timeout",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="a request body silent this long gets 408 and its connection closed (default 30)",
    )
    parser.add_argument(
        "--grpc-port",
        type=port_number,
        default=None,
        metavar="PORT",
        help="also serve the Open Inference Protocol's gRPC API on PORT (0: any free port; "
        "needs the grpc extra)",
    )
    parser.add_argument(
        "--all-versions",
        action="store_true",
        help="also serve every other version of each model at /v2/models/NAME/versions/N",
    )
    parser.add_argument(
        "--manifest",
        metavar="FILE",
        help="write a KServe InferenceService for the (single) REF to FILE instead of serving",
    )
    parser.add_argument(
        "--storage-uri",
        metavar="URI",
        help="with --manifest: the folder holding the model file on the cluster's storage",
    )
    parser.add_argument("--namespace", help="with --manifest: the Kubernetes namespace")
    parser.add_argument(
        "--name", help="with --manifest: the InferenceService name (at most 53 characters)"
    )
    parser.add_argument(
        "--predict-proba",
        action="store_true",
        help="with --manifest: KServe's sklearn runtime answers with predict_proba",
    )
    parser.add_argument(
        "--predictor",
        choices=["auto", "kserve", "custom"],
        default="auto",
        help="with --manifest: auto (a KServe runtime when one loads the model, else a "
        "container running cellpipe serve), kserve (a runtime or an error), custom",
    )
    parser.add_argument(
        "--image",
        metavar="IMAGE",
        help="with --manifest: the custom predictor's image (default: the tag "
        "`cellpipe image --model REF` gives)",
    )
    parser.add_argument(
        "--kserve-version",
        metavar="VERSION",
        help="with --manifest: the cluster's KServe release, e.g. v0.15.2 (default: the "
        "newest cellpipe knows)",
    )
    parser.add_argument(
        "--token-secret",
        metavar="SECRET[:KEY]",
        help="with --manifest and a custom predictor: require a bearer token, the value of "
        "this Kubernetes Secret's key (default key: token)",
    )
    parser.add_argument("--project", default=".", help=PROJECT_HELP)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=serve_cmd)


def serve_cmd(args: argparse.Namespace) -> int:
    """Resolve the references, then serve them (or write the manifest)."""
    from cellpipe import api
    from cellpipe.errors import ServingError

    if args.manifest is not None and len(args.refs) != 1:
        raise ServingError(
            f"--manifest writes one InferenceService, but {len(args.refs)} models were named",
            hint="run `cellpipe serve REF --manifest FILE` once per model",
        )
    if args.manifest is not None:
        return _manifest(args)
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a server stops
        api.serve_forever(
            args.refs,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            project=args.project,
            announce=lambda document: _announce(args, document),
            token=token,
            max_body=args.max_body,
            read_timeout=args.read_timeout,
            workers=args.workers,
            all_versions=args.all_versions,
            grpc_port=args.grpc_port,
        )
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6,
          "mib": 1024**2, "g": 10**9, "gb": 10**9, "gib": 1024**3}  # fmt: skip


def _byte_size(text: str) -> int:
    """``65536``, ``64KiB``, ``64MiB``, ``1GiB`` (also kB, MB, GB: powers of 1000)."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size in bytes (examples: 1048576, 512KiB, 64MiB, 1GiB)"
        )
    value = int(match.group(1)) * _UNITS[unit]
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not at least 1 byte")
    return value


def _announce(args: argparse.Namespace, document: dict[str, Any]) -> None:
    if args.json:
        render.write_json(document, sys.stdout)
    else:
        base = document["url"]
        for item in document["models"]:
            print(
                f"serving {item['name']}:{item['version']} ({item['ref']}, "
                f"{item['type']}) at {base}/v2/models/{item['name']}"
            )
        if document["grpc"]:
            print(f"gRPC (inference.GRPCInferenceService) at {document['grpc']}")
        workers = document["workers"]
        processes = "1 process" if workers == 1 else f"{workers} worker processes"
        token = ", bearer token required" if document["token"] else ""
        print(f"{processes}{token}; Ctrl-C stops the server", file=sys.stderr)
    sys.stdout.flush()


def _manifest(args: argparse.Namespace) -> int:
    from cellpipe import api

    written = api.write_kserve_manifest(
        args.refs[0],
        args.manifest,
        storage_uri=args.storage_uri,
        name=args.name,
        namespace=args.namespace,
        project=args.project,
        predict_proba=args.predict_proba,
        predictor=args.predictor,
        image=args.image,
        kserve_version=args.kserve_version,
        token_secret=args.token_secret,
    )
    for warning in written.manifest.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        render.write_json(written.to_dict(), sys.stdout)
        return 0
    version, manifest = written.version, written.manifest
    print(
        f"wrote KServe InferenceService for {version.ref} to {written.path} "
        f"({manifest.predictor} predictor)"
    )
    if manifest.predictor == "custom":
        print(
            f"its container runs `cellpipe serve {version.ref}` from the image "
            f"{manifest.image}: build it with `cellpipe image --model {version.ref} --build`",
            file=sys.stderr,
        )
    elif manifest.placeholder:
        where = (
            f"`cellpipe artifacts get {version.run_id} {version.step} {version.variable} "
            "-o model.joblib`"
            if manifest.predictor == "sklearn"
            and version.run_id
            and version.step
            and version.variable
            else "the model file (see the manifest's header)"
        )
        print(
            "set spec.predictor.model.storageUri (or pass --storage-uri) to the folder on the "
            f"cluster's storage holding it: {where}",
            file=sys.stderr,
        )
    return 0
