"""`build_once` when several machines build one cache folder at once (the nodes of a cluster filling a shared
ALARM_CACHE): with working file locks one build runs; on a shared filesystem whose locks do nothing, every builder
may build, and still exactly one complete folder is published and nobody fails or sees a partial one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# One builder process: waits for the start signal, then builds `dest` (three files, slowly) through build_once and
# checks what it got. NOLOCK=1 turns flock into a no-op, as on a filesystem without working locks.
BUILDER = textwrap.dedent("""
    import fcntl, os, sys, time
    from pathlib import Path
    from alarm.files import build_once

    dest, go, nolock = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
    if nolock:
        fcntl.flock = lambda *a: None
    while not go.exists():
        time.sleep(0.005)

    def build(tmp):
        with open(dest.parent / "builds.log", "a") as log:
            log.write(f"{os.getpid()}\\n")
        for name in ("a.bin", "b.bin"):
            (tmp / name).write_bytes(str(os.getpid()).encode() * 1000)
            time.sleep(0.2)
        (tmp / "config.json").write_text(str(os.getpid()))

    out = build_once(dest, build)
    owner = (out / "config.json").read_text()
    assert all((out / n).read_bytes() == owner.encode() * 1000 for n in ("a.bin", "b.bin")), "mixed builds"
    print(owner)
""")


def build_concurrently(tmp_path: Path, n: int, nolock: bool) -> tuple[set[str], list[str]]:
    dest, go = tmp_path / "cache" / "ckpt", tmp_path / "go"
    dest.parent.mkdir(parents=True)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(dest), str(go), "1" if nolock else "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(n)]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    builds = (dest.parent / "builds.log").read_text().split()
    leftovers = [p.name for p in dest.parent.iterdir() if p.name.startswith(".ckpt.tmp")]
    assert not leftovers, leftovers
    return {out.strip() for out, _ in outs}, builds


def test_with_working_locks_one_process_builds_and_the_others_wait(tmp_path):
    owners, builds = build_concurrently(tmp_path, 4, nolock=False)
    assert len(builds) == 1 and owners == set(builds)


@pytest.mark.parametrize("attempt", range(2))
def test_without_locks_every_builder_gets_the_one_published_folder(tmp_path, attempt):
    owners, builds = build_concurrently(tmp_path, 4, nolock=True)
    assert len(owners) == 1 and owners <= set(builds)  # all read the same complete folder, whoever built it


# A builder killed mid-build, as an interrupted teacher build: its staged folder and the copy its build keeps beside
# it under the staged folder's name (the teacher's best attempt so far) are left behind.
KILLED = textwrap.dedent("""
    import shutil, sys, time
    from pathlib import Path
    from alarm.files import build_once

    dest = Path(sys.argv[1])

    def build(tmp):
        (tmp / "weights.bin").write_bytes(b"0" * 1000)
        shutil.copytree(tmp, tmp.parent / f".{tmp.name}-best")
        (dest.parent / "started").touch()
        time.sleep(120)

    build_once(dest, build)
""")


def test_the_next_build_removes_what_a_killed_build_left_and_nothing_else(tmp_path):
    from alarm.files import BUILDER, build_once

    dest = tmp_path / "cache" / "ckpt"
    dest.parent.mkdir(parents=True)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(dest)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # bounded: 60 s
            if (dest.parent / "started").exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert (dest.parent / "started").exists(), proc.stderr.read() if proc.poll() is not None else "not started"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    left = sorted(p.name for p in dest.parent.iterdir() if "tmp" in p.name)
    assert len(left) == 2 and left[0].startswith("..ckpt.tmp-") and left[0].endswith("-best"), left
    # Others' folders: a live build of this machine, a build on another machine sharing the cache, an unmarked one.
    kept = {".ckpt.tmp-live": f"{socket.gethostname()} {os.getpid()}", ".ckpt.tmp-elsewhere": "other-host 1",
            ".ckpt.tmp-unmarked": None}
    for name, builder in kept.items():
        (dest.parent / name).mkdir()
        if builder:
            (dest.parent / name / BUILDER).write_text(builder)

    def build(tmp):
        (tmp / "config.json").write_text("{}")

    assert build_once(dest, build) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["config.json"]  # the builder's record is not published
    assert sorted(p.name for p in dest.parent.iterdir() if "tmp" in p.name) == sorted(kept)
