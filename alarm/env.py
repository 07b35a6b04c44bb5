"""Every environment variable this project reads, declared once (name -> lazy getter).

Infrastructure settings live here; model and job behaviour lives in the typed configs. The variables that pin
the CPU kernels (ATEN_CPU_CAPABILITY, MKL_CBWR, ONEDNN_MAX_CPU_ISA) are `alarm.numerics`'.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """ALARM_CACHE: where tiny checkpoints and fetched s3:// checkpoints are kept (default ~/.cache/alarm)."""
    return Path(os.environ.get("ALARM_CACHE") or Path.home() / ".cache" / "alarm")


def s3_endpoint_url() -> str | None:
    """ALARM_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL): an S3-compatible endpoint, e.g. a local moto/minio server."""
    return os.environ.get("ALARM_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE: resolve hub ids from the local hub cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def s3_storage_options() -> dict:
    """fsspec/s3fs options built from the environment; credentials come from the usual AWS variables."""
    url = s3_endpoint_url()
    return {"client_kwargs": {"endpoint_url": url}} if url else {}


GPU_RESOURCE_ENV = "ALARM_GPU_RESOURCE"


def gpu_resource() -> str:
    """ALARM_GPU_RESOURCE: the Ray resource a config's GPU count asks for. Unset = "GPU"; a local multi-node
    cluster (`python -m alarm.cluster local`) sets it on its nodes to the custom resource standing in for GPUs."""
    return os.environ.get(GPU_RESOURCE_ENV) or "GPU"


CLUSTER_NODES_ENV = "ALARM_CLUSTER_NODES"


def cluster_nodes() -> int:
    """ALARM_CLUSTER_NODES: the most nodes (head included) of the Ray cluster this process runs on, set on every
    node of the clusters `python -m alarm.cluster` renders or starts locally; 0 when unset (not declared)."""
    value = os.environ.get(CLUSTER_NODES_ENV, "")
    return int(value) if value.isdigit() else 0
