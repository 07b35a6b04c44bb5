#!/usr/bin/env bash
# Generate the Python gRPC stubs of protos/ into services/serve/_proto/ (committed; tests/unit/test_protos.py
# regenerates into a temporary folder and diffs). Needs grpcio-tools at grpcio's minor version (1.85.x).
#   bash scripts/gen_protos.sh           # regenerate in place
#   bash scripts/gen_protos.sh OUT_DIR   # write OUT_DIR/services/serve/_proto/... instead
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
