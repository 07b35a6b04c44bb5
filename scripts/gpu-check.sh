#!/usr/bin/env bash
# The GPU check: the paper's models at full size with random weights on one CUDA GPU, no model hub needed.
#   scripts/gpu-check.sh             # on a GPU machine: llm, encoders, train, serve; one table, under 8 minutes
#   scripts/gpu-check.sh --dry-run   # anywhere: every stage on the meta device, shapes checked
# Without a GPU (and without --dry-run) it says it skipped and exits 0. See bench/gpu_check.py for the stages.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python bench/gpu_check.py "$@"
