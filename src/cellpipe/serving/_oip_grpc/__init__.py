"""Generated code of the Open Inference Protocol's gRPC API (``inference.GRPCInferenceService``).

Owns: ``open_inference_grpc.proto`` (kserve/open-inference-protocol, Apache-2.0, unchanged) and
the modules protoc and grpcio-tools generate from it. Never edit the generated modules: run
``scripts/gen-oip-grpc.sh``. Their messages live in a private descriptor pool, so they coexist
with tritonclient's and KServe's copies of the same ``inference.*`` messages in one process.

Must not depend on: anything of cellpipe (generated code imports grpc and protobuf only).
"""
