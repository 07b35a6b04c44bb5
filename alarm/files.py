"""Writing local files and folders so that a crash or a concurrent writer never leaves a torn one.

    atomic_write(path, text_or_bytes)            # a file: temporary sibling, fsync, os.replace
    with staged_folder(dest) as tmp: ...         # a folder: filled beside `dest`, then swapped in whole
    build_once(dest, build)                      # a cached folder built by exactly one process
                                                 # (what a killed build of it left behind goes first)

Every writer here creates its temporary next to the target (same filesystem, so the final rename is atomic) and
gives the result ordinary permissions (mkstemp/mkdtemp make 0600/0700; outputs are read by other processes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path` through a temporary file in the same folder, fsync'd, then
    os.replace: readers see the old file or the new one, never a part. Creates the parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def fsync_path(path: str | Path) -> None:
    """Flush a finished file to disk (before the rename that publishes it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_folder(dest: str | Path) -> Iterator[Path]:
    """A temporary folder beside `dest` to fill; removed on exit unless the caller moved it into place (with
    `replace_folder`). Readable by every worker process (mkdtemp makes 0700)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(tmp: Path, dest: Path) -> None:
    """Move the complete folder `tmp` onto `dest`. An existing `dest` is swapped out first and removed only once
    the new one is in place; if the swap fails, the old folder is put back."""
    if not dest.exists():
        os.replace(tmp, dest)
        return
    old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
    os.replace(dest, old / "folder")
    try:
        os.replace(tmp, dest)
    except OSError:
        os.replace(old / "folder", dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


BUILDER = ".builder"  # in a folder build_once stages: "<host> <pid>" of the process building it


def build_once(dest: Path, build: Callable[[Path], None], done: str = "config.json") -> Path:
    """`dest`, built by `build(tmp)` into a staged folder and renamed into place, unless it exists.

    Safe across processes on one machine (a lock file per destination; a waiter finds the finished folder) and
    atomic (a folder under the final name is complete: it holds `done`). A build that was killed leaves its staged
    folder (and whatever `build` put beside it under the staged folder's name): the next build of `dest` removes
    those of a process of this machine that is gone (`remove_stale_builds`).
    """
    import fcntl

    if (dest / done).exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / done).exists():  # built by another process while we waited
            return dest
        remove_stale_builds(dest)
        with staged_folder(dest) as tmp:
            (tmp / BUILDER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
            build(tmp)
            (tmp / BUILDER).unlink(missing_ok=True)
            try:
                os.replace(tmp, dest)
            except OSError:  # a shared filesystem without working locks: another node finished it first
                if not (dest / done).exists():
                    raise
    return dest


def remove_stale_builds(dest: Path) -> list[Path]:
    """Remove the staged folders of `dest` that a killed `build_once` left (`.<name>.tmp-*`, with what its build
    kept beside them under their name, such as the teacher's `..<name>.tmp-*-best`); returns them. Only those
    whose builder was a process of this machine that no longer runs: a folder of a live build, of another machine
    sharing the cache, or without a record of its builder stays."""
    host = socket.gethostname()
    stale = []
    for path in sorted([*dest.parent.glob(f".{dest.name}.tmp-*"), *dest.parent.glob(f"..{dest.name}.tmp-*")]):
        try:
            builder_host, pid = (path / BUILDER).read_text().split()
        except (OSError, ValueError):
            continue
        if builder_host == host and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            stale.append(path)
    return stale


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal: only whether the process exists (PermissionError: another user's, running)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
