#!/usr/bin/env bash
# Regenerate the Open Inference Protocol gRPC code in src/cellpipe/serving/_oip_grpc/ from its
# .proto (kserve/open-inference-protocol, specification/protocol/open_inference_grpc.proto,
# Apache-2.0, kept verbatim with its licence notice) with grpcio-tools (the dev extra).
#
# One edit after protoc: the messages are built in a private descriptor pool, not protobuf's
# default one. tritonclient (service_pb2) and KServe (grpc_predict_v2_pb2) register the same
# `inference.*` message names in the default pool, and protobuf refuses a second definition
# ("duplicate symbol 'inference.ServerLiveRequest'") when both are imported in one process.
# The wire format does not depend on the pool.
#
# The generated code states the oldest runtime it accepts (grpcio >= the grpcio-tools version,
# protobuf >= protoc's version): keep the `grpc` extra in pyproject.toml at or above them.
#
# Usage: scripts/gen-oip-grpc.sh [PYTHON]     (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
OUT=src/cellpipe/serving/_oip_grpc
PROTO=cellpipe/serving/_oip_grpc/open_inference_grpc.proto

rm -f "$OUT"/open_inference_grpc_pb2.py "$OUT"/open_inference_grpc_pb2.pyi \
    "$OUT"/open_inference_grpc_pb2_grpc.py
(cd src && "$PYTHON" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
    "$PROTO")

PB2="$OUT/open_inference_grpc_pb2.py"
grep -q '^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(' "$PB2" || {
    echo "gen-oip-grpc: protoc's output changed; update the private-pool edit" >&2; exit 1; }
sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile(  # private pool: see scripts\/gen-oip-grpc.sh\n    /' "$PB2"

echo "generated: $(grep -h -o "Protobuf Python Version: [0-9.]*" "$PB2")," \
    "$(grep -h -o "GRPC_GENERATED_VERSION = '[0-9.]*'" "$OUT/open_inference_grpc_pb2_grpc.py")"
