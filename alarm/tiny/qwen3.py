"""`tiny://qwen3`: a random 2-layer Qwen3 (D 64) with the real Qwen3 vocabulary and chat template, so prompts
tokenize exactly as with Qwen3-4B-Thinking-2507; the base of the scripted model and the teacher's architecture."""

from __future__ import annotations

from pathlib import Path

from alarm.tiny.keys import source_of

# head_dim 32: vLLM's CPU attention accepts head sizes 32, 64, 80, 96, 112, 128, ... (not smaller)
TINY_QWEN3 = dict(
    vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, head_dim=32, max_position_embeddings=32768, rope_theta=1_000_000.0,
    rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
)


def build(out: Path, seed: int = 0) -> None:
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


def key_inputs(seed: int) -> list[bytes | str]:
    """What the checkpoint depends on besides this module: the tokenizer it writes."""
    return [source_of("alarm.model.qwen_tokenizer")]
