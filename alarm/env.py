"""Every environment variable this project reads, declared once (name -> lazy getter).

Infrastructure settings live here; model and job behaviour lives in the typed configs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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


def build_once(dest: Path, build: Callable[[Path], None]) -> Path:
    """`dest`, built by `build(tmp)` into a temporary folder beside it and renamed into place, unless it exists.

    Safe across processes (a lock file per destination; a waiter finds the finished folder) and atomic (a folder
    under the final name is complete). The folder is readable by every worker process (mkdtemp makes 0700).
    """
    import fcntl
    import shutil
    import tempfile

    if (dest / "config.json").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / "config.json").exists():  # built by another process while we waited
            return dest
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
        try:
            build(tmp)
            tmp.chmod(0o755)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path` through a temporary file in the same folder and os.replace (no torn
    files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
