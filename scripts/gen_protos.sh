#!/usr/bin/env bash
# Generate the Python gRPC stubs of protos/ into services/serve/_proto/ (the server and alarm.client) and into
# clients/python/alarm_client/_proto/ (the light client package), both committed; tests/unit/test_protos.py
# regenerates into a temporary folder and diffs. Needs grpcio-tools 1.85.1, the version that made the committed stubs
# (each release writes its own GRPC_GENERATED_VERSION); bump it, regenerate and raise grpcio's floor together.
#   bash scripts/gen_protos.sh           # regenerate in place
#   bash scripts/gen_protos.sh OUT_DIR   # write OUT_DIR/services/serve/_proto/... and OUT_DIR/clients/python/... instead
#
# The include root is mapped (-Iservices/serve/_proto=protos) so the generated *_pb2_grpc.py imports
# `services.serve._proto.alarm.v1.alarm_pb2`; with a plain `-I protos` it would import `alarm.v1`, which collides
# with our `alarm` package. Serve's grpc_options name services.serve.proxy.add_alarm_service, which registers the
# service from these stubs' descriptors.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-.}
PROTOS=(protos/alarm/v1/alarm.proto)

mkdir -p "$OUT/services/serve/_proto/alarm/v1"
$PY -m grpc_tools.protoc -Iservices/serve/_proto=protos \
  --python_out="$OUT" --grpc_python_out="$OUT" --pyi_out="$OUT" "${PROTOS[@]}"
for pkg in services/serve/_proto services/serve/_proto/alarm services/serve/_proto/alarm/v1; do
  [ -f "$OUT/$pkg/__init__.py" ] || : > "$OUT/$pkg/__init__.py"
done

# the light client: the same contract under its own package (it never shares a process with services/: two copies
# of one .proto in one process would collide in protobuf's descriptor pool)
LIGHT="$OUT/clients/python"
mkdir -p "$LIGHT/alarm_client/_proto/alarm/v1"
$PY -m grpc_tools.protoc -Ialarm_client/_proto=protos \
  --python_out="$LIGHT" --grpc_python_out="$LIGHT" --pyi_out="$LIGHT" "${PROTOS[@]}"
for pkg in alarm_client/_proto alarm_client/_proto/alarm alarm_client/_proto/alarm/v1; do
  [ -f "$LIGHT/$pkg/__init__.py" ] || : > "$LIGHT/$pkg/__init__.py"
done
