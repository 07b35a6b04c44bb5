"""The frozen reasoning LLM: tokenizer, the input-embedding table alone, or the whole model for training.

Serving and prompt assembly need only `embed_tokens` (151,936 x 2560 for Qwen3-4B), so `load_embedding` reads that
one tensor from the safetensors files without building the decoder. Training needs the full model, frozen.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from alarm.checkpoints import resolve_checkpoint
from alarm.config import LLMConfig
from alarm.errors import CheckpointError, CheckpointMismatch

EMBED_KEYS = ("model.embed_tokens.weight", "embed_tokens.weight", "model.language_model.embed_tokens.weight")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_llm(cfg: LLMConfig) -> Path:
    folder = resolve_checkpoint(
        cfg.checkpoint, cfg.revision, expect=["config.json", "tokenizer.json", "model.safetensors|model.safetensors.index.json"]
    )
    check_llm_config(folder, cfg)
    return folder


def check_llm_config(folder: Path, cfg: LLMConfig) -> dict:
    hf = json.loads((folder / "config.json").read_text())
    hf = hf.get("text_config", hf)
    for key, want in (("hidden_size", cfg.hidden_size), ("vocab_size", cfg.vocab_size)):
        if hf.get(key) != want:
            raise CheckpointMismatch(
                f"LLM checkpoint {folder}: config.json {key}={hf.get(key)} but llm.{key}={want}; "
                f"set llm.{key}={hf.get(key)} or point llm.checkpoint at the right model"
            )
    return hf


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.chat_template is None:
        raise CheckpointError(f"tokenizer in {folder} has no chat template; ALARM needs the Qwen3 chat layout")
    if tok.pad_token_id is None:
        raise CheckpointError(f"tokenizer in {folder} has no pad token; set pad_token in tokenizer_config.json")
    return tok


def load_embedding(folder: Path, cfg: LLMConfig, dtype: torch.dtype | None = None) -> nn.Embedding:
    """The frozen input-embedding table, read alone from (possibly sharded) safetensors."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        key = next((k for k in EMBED_KEYS if k in weight_map), None)
        files = [folder / weight_map[key]] if key else []
    else:
        files, key = [folder / "model.safetensors"], None
    weight = None
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            key = key or next((k for k in EMBED_KEYS if k in f.keys()), None)
            if key is not None:
                weight = f.get_tensor(key)
    if weight is None:
        raise CheckpointMismatch(f"LLM checkpoint {folder} has no input embedding; looked for {', '.join(EMBED_KEYS)}")
    want = (cfg.vocab_size, cfg.hidden_size)
    if tuple(weight.shape) != want:
        raise CheckpointMismatch(f"LLM checkpoint {folder}: {key} has shape {tuple(weight.shape)}, expected {want}")
    emb = nn.Embedding.from_pretrained(weight.to(dtype or DTYPES[cfg.dtype]), freeze=True)
    return emb.eval()


def load_llm(folder: Path, cfg: LLMConfig, dtype: torch.dtype | None = None, device: str = "cpu") -> nn.Module:
    """The whole causal LM, frozen and in eval mode (it never trains in ALARM)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype or DTYPES[cfg.dtype]).to(device)
    model.requires_grad_(False)
    return model.eval()


# Qwen/Qwen3-4B-Thinking-2507 architecture (config.json at the pinned revision), for meta-device builds and
# shape checks without downloading 8 GB.
QWEN3_4B_THINKING_2507 = dict(
    vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=262144, rope_theta=5_000_000.0,
    rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
)


def build_llm_meta(arch: dict) -> nn.Module:
    """A Qwen3 causal LM on the meta device (no memory, no weights) from architecture hyper-parameters."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    with torch.device("meta"):
        return Qwen3ForCausalLM(Qwen3Config(**arch))
