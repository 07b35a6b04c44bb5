"""Where source files live: local paths, s3:// and hf://datasets/OWNER/NAME@REVISION/... (huggingface_hub's
fsspec filesystem), opened, listed and resolved the same way on the driver and in Ray Data workers.

    fs, path = filesystem("hf://datasets/openslr/librispeech_asr@<sha>/all/train.clean.100/*.parquet")
    files = list_files("s3://corpora/esc50/", (".parquet",), storage_options)
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

import fsspec

from alarm import env
from alarm.config.corpus import HF_URI
from alarm.errors import InvalidInput


def hf_filesystem(token: str | None = None):
    """huggingface_hub's fsspec filesystem (imported here: only hf:// sources need it)."""
    from huggingface_hub import HfFileSystem

    return HfFileSystem(token=token)


def parse_hf_uri(uri: str) -> tuple[str, str, str]:
    """'hf://datasets/OWNER/NAME@REVISION/PATH' -> (OWNER/NAME, REVISION, PATH).

    Raises:
        InvalidInput: not that form (no revision pinned, not a dataset, nothing after the revision).
    """
    m = HF_URI.match(uri)
    if m is None:
        raise InvalidInput(f"{uri!r} is not hf://datasets/OWNER/NAME@REVISION/PATH (pin the revision after '@')")
    return m["repo"], m["revision"], m["path"]


def storage_options_for(uri: str) -> dict:
    """What a worker needs to open `uri` (environment variables do not reach a cluster's workers): the S3
    endpoint and credentials for s3://, the hub token (if this machine has one) for hf://."""
    if uri.startswith("s3://"):
        return env.s3_storage_options()
    if uri.startswith("hf://"):
        from huggingface_hub import get_token

        token = get_token()
        return {"token": token} if token else {}
    return {}


def filesystem(uri: str, storage_options: dict | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for a local path, file://, s3:// or hf:// URI."""
    opts = storage_options_for(uri) if storage_options is None else storage_options
    if uri.startswith("hf://"):
        repo, revision, path = parse_hf_uri(uri)
        return hf_filesystem(opts.get("token")), f"datasets/{repo}@{revision}/{path}"
    if uri.startswith("s3://"):
        import s3fs

        return s3fs.S3FileSystem(**opts), uri.removeprefix("s3://")
    if "://" in uri and not uri.startswith("file://"):
        return fsspec.core.url_to_fs(uri, **opts)
    return fsspec.filesystem("file"), local(uri)


def unresolve(uri: str, path: str) -> str:
    """A path returned by `filesystem(uri)[0]` (glob, find) as a URI of the same kind as `uri`."""
    if uri.startswith("hf://"):
        return "hf://" + path
    if uri.startswith("s3://"):
        return "s3://" + path
    return path


def list_files(uri: str, suffixes: tuple[str, ...], storage_options: dict | None = None) -> list[str]:
    """The files a source path names, sorted: the file itself, every file under a folder, or a glob's matches,
    keeping those ending in one of `suffixes`.

    Raises:
        InvalidInput: nothing matches (the message names the path and what was looked for).
    """
    fs, path = filesystem(uri, storage_options)
    try:
        if any(c in path for c in "*?["):
            found = fs.glob(path)
        elif fs.isdir(path):
            found = fs.find(path)
        else:
            found = [path] if fs.exists(path) else []
    except (OSError, ValueError) as e:  # unreachable bucket, unknown repo or revision, bad credentials
        raise InvalidInput(f"cannot list source {uri}: {type(e).__name__}: {e}") from e
    files = sorted(p for p in found if p.lower().endswith(suffixes) and not posixpath.basename(p).startswith("."))
    if not files:
        raise InvalidInput(f"source {uri} matches no {'/'.join(suffixes)} file; check the path (a file, a folder "
                           "or a glob), the revision, and the credentials (HF_TOKEN, AWS variables)")
    return [unresolve(uri, p) for p in files]


def local(path: str) -> str:
    return os.path.expanduser(path.removeprefix("file://"))


def parent(path: str) -> str:
    """The folder (local, absolute) or URI prefix that holds `path`."""
    if "://" in path and not path.startswith("file://"):
        return path.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(local(path)))


def resolve(base: str, audio: str) -> str:
    """URIs and absolute paths as given; relative paths joined to `base` (a folder or a URI prefix)."""
    if "://" in audio or os.path.isabs(audio):
        return audio
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, audio))}"
    return os.path.normpath(os.path.join(base, audio))


def open_file(uri: str, storage_options: dict | None = None, compression: str | None = None):
    """A binary file object for `uri`; a missing or unreadable file is an InvalidInput naming it."""
    fs, path = filesystem(uri, storage_options)
    try:
        f = fs.open(path, "rb")
        if compression:
            from fsspec.compression import compr

            f = compr[compression](f, mode="rb")
        return f
    except FileNotFoundError as e:
        raise InvalidInput(f"manifest {uri} not found ({e}); check the path, or the bucket and "
                           "ALARM_S3_ENDPOINT_URL / AWS credentials for s3://") from e
    except (OSError, ValueError, ImportError) as e:
        raise InvalidInput(f"cannot open manifest {uri}: {type(e).__name__}: {e}") from e
