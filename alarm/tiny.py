"""Tiny random-weight checkpoints, built locally and deterministically, in the real checkpoints' on-disk formats.

    python -m alarm.tiny                 # build all into $ALARM_CACHE/tiny (default ~/.cache/alarm/tiny)
    python -m alarm.tiny --out DIR qwen3 # one of them, somewhere else

The `tiny` presets point at `tiny://<name>`; `alarm.sources.resolve_checkpoint` calls `ensure_tiny`, which builds
on first use under a file lock and commits the folder atomically. The tiny LLM is a 2-layer Qwen3 (D 64) with the real
Qwen3 vocabulary and chat template, so prompts tokenize exactly as with Qwen3-4B-Thinking-2507.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from alarm import env
from alarm.files import build_once

TINY_VERSION = 2  # bump when a builder changes, so stale caches are rebuilt rather than reused

# head_dim 32: vLLM's CPU attention accepts head sizes 32, 64, 80, 96, 112, 128, ... (not smaller)
TINY_QWEN3 = dict(
    vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, head_dim=32, max_position_embeddings=32768, rope_theta=1_000_000.0,
    rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
)


def build_tiny_qwen3(out: Path, seed: int = 0) -> None:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    from alarm.model.qwen_tokenizer import save_qwen3_tokenizer

    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(**TINY_QWEN3)).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(
        bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643,
        do_sample=True, temperature=0.6, top_p=0.95, top_k=20,  # Qwen3-Thinking-2507's recommended sampling
    ).save_pretrained(str(out))
    save_qwen3_tokenizer(out)


def builders() -> dict[str, Callable[[Path, int], None]]:
    from alarm.model.encoders import TINY_BUILDERS
    from alarm.tiny_scripted import build_tiny_qwen3_scripted
    from alarm.toy.teacher import build_tiny_qwen3_teacher

    return {**TINY_BUILDERS, "qwen3": build_tiny_qwen3, "qwen3-scripted": build_tiny_qwen3_scripted,
            "qwen3-teacher": build_tiny_qwen3_teacher}


def builder_fingerprint(builder: Callable) -> str:
    """Short hash of the source of the builder's module and of the modules it names in `fingerprint_modules`
    (what its output depends on): an edited builder never reuses a stale cached checkpoint."""
    import hashlib
    import importlib
    import inspect

    h = hashlib.sha256()
    for name in (builder.__module__, *getattr(builder, "fingerprint_modules", ())):
        h.update(inspect.getsource(importlib.import_module(name)).encode())
    return h.hexdigest()[:8]


def tiny_root() -> Path:
    return env.cache_dir() / "tiny"


def ensure_tiny(name: str, root: Path | None = None, seed: int = 0) -> Path:
    """The folder of tiny checkpoint `name` (built from `seed`; `tiny://` names seed 0), built first if missing
    (safe across processes)."""
    table = builders()
    if name not in table:
        from alarm.errors import CheckpointError

        raise CheckpointError(f"unknown tiny checkpoint tiny://{name}; valid: {', '.join(sorted(table))}")
    root = root or tiny_root()
    tag = f"-seed{seed}" if seed else ""
    dest = root / f"{name}{tag}-v{TINY_VERSION}-{builder_fingerprint(table[name])}"

    def build(tmp: Path) -> None:
        table[name](tmp, seed)
        (tmp / "tiny.json").write_text(json.dumps({"name": name, "version": TINY_VERSION, "seed": seed}) + "\n")

    return build_once(dest, build)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alarm.tiny", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="checkpoints to build (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="root folder (default: $ALARM_CACHE/tiny)")
    args = parser.parse_args(argv)
    names = args.names or sorted(builders())
    for name in names:
        print(f"{name}: {ensure_tiny(name, args.out)}")


if __name__ == "__main__":
    main()
