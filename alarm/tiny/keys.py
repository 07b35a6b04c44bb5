"""Cache keys of the tiny checkpoints: what a checkpoint's bytes depend on, hashed into its folder name, so that
an edit that changes them rebuilds it and any other edit does not.

    key = cache_key("qwen3-teacher", build, seed=0)

A trained model's key covers its code, its architecture and a digest of the data it trains on (`data_digest`), not
the source of the modules that produce that data; the digest is remembered per library source (`memo`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from alarm import env, numerics
from alarm.encoders import FAMILIES
from alarm.files import atomic_write
from alarm.tiny.lm import Batches


def source_of(*modules: str) -> bytes:
    """The source code of `modules`, concatenated (what a build that runs them depends on)."""
    return b"".join(inspect.getsource(importlib.import_module(m)).encode() for m in modules)


def cache_key(name: str, build: Callable[[Path, int], None], seed: int) -> str:
    """Short hash of what the bytes of tiny checkpoint `name`, made by `build(out, seed)`, depend on: its
    builder's module source, and what that module's optional `key_inputs(seed)` adds (other code, the
    architecture, a digest of the training data); in portable numerics (`alarm.numerics`), that mode, and MKL's
    branch and the CPU where the branch is not the mode's (a CPU of another vendor than Intel). An
    encoder's also covers the shared checkpoint writers and its record's tiny config."""
    module = importlib.import_module(build.__module__)
    parts: list[bytes | str] = [inspect.getsource(module)]
    if name in FAMILIES:
        parts += [source_of("alarm.encoders.checkpoint"), json.dumps(FAMILIES[name].tiny_config, sort_keys=True)]
    parts += getattr(module, "key_inputs", lambda seed: [])(seed)
    if numerics.portable():  # other kernels, other bytes (native builds keep the keys they had)
        parts.append(json.dumps(numerics.PORTABLE, sort_keys=True))
        if numerics.mode() != "portable":  # not Intel: MKL's dispatch for this CPU, not the Intel machines' bytes
            parts.append(numerics.mode())
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:8]


def memo(tag: str, compute: Callable[[], str]) -> str:
    """`compute()` (a digest that takes seconds to make), remembered in the cache for the current source of the
    whole library: any edit under alarm/ recomputes it once, so it never goes stale with our code (installed
    packages are not covered: a tokenizers upgrade that tokenizes differently needs `TINY_VERSION` bumped)."""
    path = env.cache_dir() / "tiny" / ".keys" / f"{tag}-{library_digest()}"  # beside the checkpoints
    if path.is_file():
        return path.read_text().strip()
    value = compute()
    atomic_write(path, value + "\n")
    return value


@functools.cache
def library_digest() -> str:
    """sha256 of every source file of the `alarm` package (~5 ms)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def data_digest(batches: Callable[[object, int], Batches], seed: int) -> str:
    """sha256 of the tokenizer files a tiny Qwen3 ships and of `batches(tok, seed)`, the token streams it trains
    on: what its weights depend on besides its code (seconds: the teacher's data takes ~7 s)."""
    files, tok = _tokenizer()
    h = hashlib.sha256(files)
    h.update(json.dumps(batches(tok, seed), separators=(",", ":")).encode())
    return h.hexdigest()


@functools.cache
def _tokenizer() -> tuple[bytes, object]:
    """The tiny Qwen3s' tokenizer files (name and bytes, concatenated) and the tokenizer they load as (~7 s to
    build from the BPE ranks, so once per process)."""
    from transformers import AutoTokenizer

    from alarm.model.qwen_tokenizer import save_qwen3_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        save_qwen3_tokenizer(Path(tmp))
        files = b"".join(p.name.encode() + b"\0" + p.read_bytes() for p in sorted(Path(tmp).iterdir()))
        return files, AutoTokenizer.from_pretrained(tmp)
