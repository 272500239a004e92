"""The Open Inference Protocol's gRPC API (``inference.GRPCInferenceService``) on its own port.

Owns: `start_grpc_server` and `RunningGrpcServer`: the service KServe and Triton expose
(ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer) over the models
of a `ModelTable`, run by grpcio in this process's threads. Tensors arrive as
``raw_input_contents`` (what tritonclient sends) or as typed ``contents``; outputs go back as
``raw_output_contents`` when the request sent raw inputs (KServe's rule; what tritonclient
reads) or asks for it with the bool parameter ``binary_data_output``, else as typed contents.

Invariants: the REST and gRPC APIs answer alike: the same model table, the same checks and
model call (`protocol.run_model`), the same tensor decoding (`tensors`) and the same error
messages, with the REST status mapped to a gRPC code (`GRPC_CODES`: 400 INVALID_ARGUMENT, 401
UNAUTHENTICATED, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 500 INTERNAL). With a
token, every call but ServerLive and ServerReady (the health probes) needs the metadata
``authorization: Bearer TOKEN``, compared in constant time. A message larger than
``max_message_bytes`` is refused by grpcio (RESOURCE_EXHAUSTED) before it is decoded.
`RunningGrpcServer.stop` returns once every thread the server started has ended.

Must not depend on: the web framework, the runner, kfp or notebooks. grpcio and protobuf (the
``grpc`` extra) are imported only when a server starts, so this module imports without them.
"""

from __future__ import annotations

import hmac
import importlib
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from cellpipe.errors import ServingError
from cellpipe.serving.protocol import DEFAULT_MAX_BODY, ServedModel, run_model, server_version
from cellpipe.serving.tensors import (
    RequestError,
    check_header,
    datatype_of,
    decode_binary,
    decode_json,
    encode_binary,
)

if TYPE_CHECKING:
    from cellpipe.serving.metrics import Metrics
    from cellpipe.serving.table import ModelTable

__all__ = ["GRPC_CODES", "RunningGrpcServer", "grpc_code_name", "start_grpc_server"]

logger = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
"""The Open Inference Protocol's gRPC service (as KServe and Triton name it)."""

GRPC_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}
"""The gRPC status code (``grpc.StatusCode`` member name) of each REST status the server uses."""

DEFAULT_WORKERS = 8
"""Threads answering calls (the model call holds the GIL; more threads do not add speed)."""

DEFAULT_MAX_CONCURRENT_RPCS = 64
"""Calls admitted at once (running or queued); more are refused with RESOURCE_EXHAUSTED."""

_BEARER = b"bearer "
_T = TypeVar("_T")

# The InferTensorContents field that carries each datatype (FP16 has none: raw only).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_CONTENTS_FIELDS = tuple(sorted(set(_CONTENTS_FIELD.values())))


def grpc_code_name(status: int) -> str:
    """Return the gRPC status code name for a REST status (`GRPC_CODES`; else by class)."""
    name = GRPC_CODES.get(status)
    if name is not None:
        return name
    return "INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL"


def _error_text(exc: RequestError) -> str:
    # The REST API's {"error": ...} text, so a client sees the same words on either API.
    return f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message


def _import_grpc() -> tuple[Any, Any, Any]:
    """Return grpc, the generated messages and the generated service module."""
    try:
        grpc = importlib.import_module("grpc")
        pb = importlib.import_module("cellpipe.serving._oip_grpc.open_inference_grpc_pb2")
        services = importlib.import_module(
            "cellpipe.serving._oip_grpc.open_inference_grpc_pb2_grpc"
        )
    except ImportError as exc:
        raise ServingError(
            f"the gRPC API needs the 'grpc' extra ({exc.name or exc} is missing)",
            hint="pip install 'cellpipe[grpc]'",
        ) from exc
    except RuntimeError as exc:  # the generated code refuses an older grpcio
        raise ServingError(str(exc), hint="pip install -U 'cellpipe[grpc]'") from exc
    return grpc, pb, services


# -- tensors ----------------------------------------------------------------------------------


def _decode_contents(
    name: str, datatype: str, shape: tuple[int, ...], contents: Any
) -> np.ndarray[Any, Any]:
    """Return an input's typed ``contents`` as an array of ``shape`` (checked as JSON data)."""
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise RequestError(
            f"input {name!r}: {datatype} has no typed contents field",
            hint="send it in raw_input_contents",
        )
    for other in _ALL_CONTENTS_FIELDS:
        if other != field and len(getattr(contents, other)):
            raise RequestError(
                f"input {name!r} is {datatype} but its contents are in {other}; "
                f"{datatype} goes in {field}"
            )
    values = getattr(contents, field)
    expected = math.prod(shape)
    if len(values) != expected:
        raise RequestError(
            f"input {name!r}: shape {list(shape)} needs {expected} elements, "
            f"the data has {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(expected, dtype=object)
        for i, value in enumerate(values):
            try:
                array[i] = value.decode("utf-8")
            except UnicodeDecodeError:
                array[i] = value
        return array.reshape(shape)
    # The JSON path's element checks: types, range (300 is no INT8), count.
    return decode_json(name, datatype, shape, list(values))


def _decode_inputs(request: Any) -> dict[str, tuple[str, np.ndarray[Any, Any]]]:
    raws = request.raw_input_contents
    if not request.inputs:
        raise RequestError("the request needs at least one input")
    if raws and len(raws) != len(request.inputs):
        raise RequestError(
            f"the request has {len(request.inputs)} inputs and {len(raws)} "
            "raw_input_contents entries",
            hint="give one raw_input_contents entry per input, in the inputs' order",
        )
    decoded: dict[str, tuple[str, np.ndarray[Any, Any]]] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise RequestError("every input needs a name")
        if name in decoded:
            raise RequestError(f"input {name!r} is given twice")
        datatype, shape = check_header(name, tensor.datatype, list(tensor.shape))
        if raws:
            if tensor.HasField("contents"):
                raise RequestError(
                    f"input {name!r} has contents, but the request uses raw_input_contents",
                    hint="send every input one way: all raw, or all as typed contents",
                )
            array = decode_binary(name, datatype, shape, raws[index])
        else:
            array = _decode_contents(name, datatype, shape, tensor.contents)
        decoded[name] = (datatype, array)
    return decoded


def _wanted_outputs(request: Any) -> list[str]:
    # Unknown or repeated names: run_model says so, in the REST API's words.
    if any(not output.name for output in request.outputs):
        raise RequestError("every requested output needs a name")
    return [output.name for output in request.outputs]


def _raw_outputs_wanted(request: Any) -> bool:
    parameter = request.parameters.get("binary_data_output")
    if parameter is None:
        return len(request.raw_input_contents) > 0
    if parameter.WhichOneof("parameter_choice") != "bool_param":
        raise RequestError("the parameter 'binary_data_output' must be a bool_param")
    return bool(parameter.bool_param)


def _fill_typed(tensor: Any, datatype: str, array: np.ndarray[Any, Any]) -> None:
    flat = array.reshape(-1)
    field = getattr(tensor.contents, _CONTENTS_FIELD[datatype])
    if datatype == "BYTES":
        field.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat)
    else:
        field.extend(flat.tolist())


def _infer_response(pb: Any, model: ServedModel, request: Any) -> Any:
    inputs = _decode_inputs(request)
    wanted = _wanted_outputs(request)
    raw = _raw_outputs_wanted(request)
    produced = run_model(model, inputs, wanted)
    response = pb.ModelInferResponse(
        model_name=model.version.name, model_version=str(model.version.version), id=request.id
    )
    try:
        arrays = {name: np.asarray(value) for name, value in produced.items()}
        datatypes = {name: datatype_of(array) for name, array in arrays.items()}
        # FP16 has no typed field, and raw_output_contents is all or nothing.
        if raw or "FP16" in datatypes.values():
            for name, value in produced.items():
                encoded = encode_binary(name, value)
                response.outputs.add(
                    name=name, datatype=encoded.json["datatype"], shape=encoded.json["shape"]
                )
                response.raw_output_contents.append(encoded.raw)
        else:
            for name, array in arrays.items():
                tensor = response.outputs.add(
                    name=name, datatype=datatypes[name], shape=list(array.shape)
                )
                _fill_typed(tensor, datatypes[name], array)
    except ServingError as exc:
        raise RequestError(exc.message, status=500, hint=exc.hint) from exc
    return response


def _tensor_metadata(message: Any, spec: Mapping[str, Any]) -> Any:
    return message(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])


# -- the service ------------------------------------------------------------------------------


class _Service:
    """The six calls of ``inference.GRPCInferenceService`` over a model table."""

    def __init__(
        self,
        table: ModelTable,
        *,
        grpc: Any,
        pb: Any,
        token: str | None,
        metrics: Metrics | None,
    ) -> None:
        self._table = table
        self._grpc = grpc
        self._pb = pb
        self._token = token.encode() if token else None
        self._metrics = metrics
        self._version = server_version()

    # The handlers grpcio calls (names fixed by the service).

    def ServerLive(self, request: Any, context: Any) -> Any:
        return self._pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        # Every served reference was loaded before the server started.
        return self._pb.ServerReadyResponse(ready=True)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        def work() -> Any:
            # binary_tensor_data is an extension of the REST API only.
            return self._pb.ServerMetadataResponse(
                name="cellpipe", version=self._version, extensions=[]
            )

        return self._answer(context, work)

    def ModelReady(self, request: Any, context: Any) -> Any:
        def work() -> Any:
            ready, _ = self._table.readiness(request.name, request.version or None)
            return self._pb.ModelReadyResponse(ready=ready)

        return self._answer(context, work)

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        def work() -> Any:
            # The REST document: an exposed version that cannot be served has its signature
            # and properties {"ready": "false", "reason": ...}.
            document = self._table.metadata(request.name, request.version or None)
            tensor = self._pb.ModelMetadataResponse.TensorMetadata
            return self._pb.ModelMetadataResponse(
                name=document["name"],
                versions=document["versions"],
                platform=document["platform"],
                inputs=[_tensor_metadata(tensor, t) for t in document["inputs"]],
                outputs=[_tensor_metadata(tensor, t) for t in document["outputs"]],
                properties={str(k): str(v) for k, v in document.get("properties", {}).items()},
            )

        return self._answer(context, work)

    def ModelInfer(self, request: Any, context: Any) -> Any:
        def work() -> Any:
            model = self._lookup(request.model_name, request.model_version or None)
            if self._metrics is None:
                return _infer_response(self._pb, model, request)
            # Counted 200, or the RequestError's status, or 500 (Metrics.track's rule).
            with self._metrics.track(model.version.name, str(model.version.version), "grpc"):
                return _infer_response(self._pb, model, request)

        return self._answer(context, work)

    # Shared steps.

    def _lookup(self, name: str, version: str | None) -> ServedModel:
        try:
            return self._table.get(name, version)
        except RequestError as exc:
            if self._metrics is not None:
                # Never a label from the client: an unknown name would grow the series.
                known = name if name in self._table.names() else ""
                with self._metrics.track(known, "", "grpc") as done:
                    done(exc.status)
            raise

    def _authorized(self, context: Any) -> bool:
        if self._token is None:
            return True
        for key, value in context.invocation_metadata():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                # The REST API's rule: scheme "Bearer" in any case, then the token.
                if given[:7].lower() != _BEARER:
                    return False
                return hmac.compare_digest(given[7:].strip(), self._token)
        return False

    def _answer(self, context: Any, work: Callable[[], _T]) -> _T:
        failure: tuple[int, str]
        try:
            if not self._authorized(context):
                raise RequestError(
                    "this server needs a bearer token (metadata 'authorization: Bearer TOKEN')",
                    status=401,
                )
            return work()
        except RequestError as exc:
            failure = (exc.status, _error_text(exc))
        except Exception as exc:
            logger.exception("internal error in a gRPC call")
            failure = (500, f"internal server error: {type(exc).__name__}: {exc}")
        status, text = failure
        context.abort(getattr(self._grpc.StatusCode, grpc_code_name(status)), text)
        raise AssertionError("context.abort returned")  # pragma: no cover


# -- the server -------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class RunningGrpcServer:
    """A gRPC server answering in this process's threads (see `start_grpc_server`)."""

    host: str
    port: int
    _server: Any
    _executor: ThreadPoolExecutor
    _threads: Sequence[threading.Thread]

    @property
    def address(self) -> str:
        """The ``host:port`` a client dials (an IPv6 host in brackets)."""
        return f"{_bracketed(self.host)}:{self.port}"

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop: refuse new calls, let running ones finish for ``grace`` s, end every thread."""
        before = set(threading.enumerate())
        self._server.stop(grace).wait()
        # grpcio's polling thread ends once shutdown completes; its grace timer right after.
        timers = _grpc_threads(t for t in threading.enumerate() if t not in before)
        for thread in [*self._threads, *timers]:
            thread.join()
        self._executor.shutdown(wait=True)

    def __enter__(self) -> RunningGrpcServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_GRPC_THREAD_TARGETS = ("(_serve)", "(cancel_all_calls_after_grace)")
"""How grpcio's Python server names its threads (``Thread-N (target)``)."""


def _grpc_threads(threads: Iterable[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threads if t.name.endswith(_GRPC_THREAD_TARGETS)]


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def start_grpc_server(
    table: ModelTable,
    *,
    host: str,
    port: int,
    token: str | None = None,
    metrics: Metrics | None = None,
    max_message_bytes: int = DEFAULT_MAX_BODY,
    workers: int = DEFAULT_WORKERS,
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS,
    reuse_port: bool = False,
) -> RunningGrpcServer:
    """Serve ``table`` over the Open Inference Protocol's gRPC API; return once it listens.

    Args:
        table: the models to serve (shared with the REST API).
        host: the address to listen on (``127.0.0.1``, ``::1``, ``0.0.0.0``, ...).
        port: the TCP port; 0 picks a free one (`RunningGrpcServer.port` says which).
        token: when given, every call but the health probes needs ``authorization: Bearer
            TOKEN`` in its metadata.
        metrics: counts each ModelInfer call with protocol ``grpc``.
        max_message_bytes: the largest request and response message.
        workers: threads answering calls.
        max_concurrent_rpcs: calls admitted at once; more get RESOURCE_EXHAUSTED.
        reuse_port: share the port with other processes' servers (``SO_REUSEPORT``; for
            pre-forked workers). Off, a port in use is an error.

    Raises:
        ServingError: grpcio is not installed (the ``grpc`` extra), or the address cannot be
            bound (the port is in use, or the host is not an address of this machine).
    """
    grpc, pb, services = _import_grpc()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cellpipe-grpc")
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    server = grpc.server(executor, options=options, maximum_concurrent_rpcs=max_concurrent_rpcs)
    services.add_GRPCInferenceServiceServicer_to_server(
        _Service(table, grpc=grpc, pb=pb, token=token, metrics=metrics), server
    )
    address = f"{_bracketed(host)}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        server.stop(None)
        executor.shutdown(wait=True)
        raise ServingError(
            f"cannot listen for gRPC on {address}: port {port} is in use, or {host} is not "
            "an address of this machine",
            hint="choose another gRPC port (0: any free port)",
        )
    before = set(threading.enumerate())
    server.start()
    threads = _grpc_threads(t for t in threading.enumerate() if t not in before)
    return RunningGrpcServer(
        host=host, port=bound, _server=server, _executor=executor, _threads=threads
    )
