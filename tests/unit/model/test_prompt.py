"""Prompt assembly on the tiny Qwen3 (real vocabulary and chat template)."""

import pytest
import torch

from alarm.config import LLMConfig
from alarm.errors import InvalidInput
from alarm.model.llm import load_embedding, load_llm, load_tokenizer
from alarm.model.prompt import IGNORE, PromptBuilder, collate_training

SYSTEM = "You are an audio-understanding model."


@pytest.fixture(scope="module")
def parts(tiny_qwen3):
    cfg = LLMConfig(checkpoint=str(tiny_qwen3), hidden_size=64, vocab_size=151936, dtype="float32")
    tok = load_tokenizer(tiny_qwen3)
    return tok, load_embedding(tiny_qwen3, cfg), load_llm(tiny_qwen3, cfg)


@pytest.fixture(scope="module")
def builder(parts):
    tok, emb, _ = parts
    return PromptBuilder(tok, emb, max_length=64)


def _audio(n, d=64, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 5


def test_real_qwen3_special_token_ids(parts):
    tok = parts[0]
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]) == [
        151643, 151644, 151645, 151667, 151668]
    assert tok.pad_token_id == 151643 and tok.eos_token_id == 151645
    assert tok.encode("Hello world", add_special_tokens=False) == [9707, 1879]


@pytest.mark.parametrize("system", [None, SYSTEM])
def test_text_only_equals_base_llm(parts, builder, system):
    tok, emb, llm = parts
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "Hi there"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    p = builder.build("Hi there", None, system=system)
    assert p.input_ids.tolist() == ids and p.audio_spans == []
    assert torch.equal(p.embeds, llm.get_input_embeddings()(torch.tensor(ids)))
    with torch.no_grad():
        a = llm(input_ids=torch.tensor([ids])).logits
        b = llm(inputs_embeds=p.embeds[None]).logits
    assert torch.equal(a, b)


def test_audio_goes_after_user_header_and_before_prompt(parts, builder):
    tok = parts[0]
    audio = _audio(7)
    p = builder.build("Describe it.", audio, system=SYSTEM)
    (s, e), = p.audio_spans
    before = tok.decode(p.input_ids[:s])
    after = tok.decode(p.input_ids[e:])
    assert before == f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
    assert after == "Describe it.<|im_end|>\n<|im_start|>assistant\n<think>\n"  # no newline before the prompt
    assert torch.equal(p.embeds[s:e], audio)
    assert (p.input_ids[s:e] == tok.pad_token_id).all()


def test_training_labels_mask_everything_but_target(parts, builder):
    tok = parts[0]
    target = "I hear a dog.</think>\n\nA dog barks."
    p = builder.build_training("What is it?", _audio(5), target)
    n_target = len(tok.encode(target, add_special_tokens=False))
    assert (p.labels[:-n_target] == IGNORE).all()
    assert p.labels[-n_target:].tolist() == tok.encode(target, add_special_tokens=False)
    assert p.labels[-1].item() != tok.eos_token_id  # no EOS appended
    assert not p.truncated
    assert tok.decode(p.input_ids[: -n_target])[-len("<think>\n"):] == "<think>\n"


def test_training_truncates_target_to_max_length(builder):
    p = builder.build_training("Q?", _audio(5), "word " * 200)
    assert p.length == builder.max_length and p.truncated
    with pytest.raises(InvalidInput, match="at or above max_length=64"):
        builder.build_training("Q?", _audio(80), "x")
    with pytest.raises(InvalidInput, match="empty training target"):
        builder.build_training("Q?", _audio(5), "")


def test_ensemble_layout(parts, builder):
    tok = parts[0]
    a1, a2 = _audio(4, seed=1), _audio(6, seed=2)
    p = builder.build_ensemble("Which one?", [a1, a2], system=SYSTEM)
    assert len(p.audio_spans) == 2
    (s1, e1), (s2, e2) = p.audio_spans
    assert torch.equal(p.embeds[s1:e1], a1) and torch.equal(p.embeds[s2:e2], a2)
    head = tok.decode(p.input_ids[:s1])
    assert head.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nYou will hear the same audio 2 times")
    assert head.endswith("This is what you hear in the audio for the (1/2) time:\n")
    assert tok.decode(p.input_ids[e1:s2]) == "\nThis is what you hear in the audio for the (2/2) time:\n"
    assert tok.decode(p.input_ids[e2:]) == "\nWhich one?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    with pytest.raises(InvalidInput, match="at least 2"):
        builder.build_ensemble("x", [a1])


def test_bad_audio_block_is_rejected(builder):
    with pytest.raises(InvalidInput, match=r"must be \(S, 64\)"):
        builder.build("x", torch.zeros(3, 16))
    with pytest.raises(InvalidInput, match=r"must be \(S, 64\)"):
        builder.build("x", torch.zeros(0, 64))


def test_continuation_appends_assistant_text(parts, builder):
    tok = parts[0]
    p = builder.build("Q?", _audio(3))
    q = builder.continuation(p, "thinking...\n</think>\n\n")
    assert tok.decode(q.input_ids[p.length:]) == "thinking...\n</think>\n\n"
    assert torch.equal(q.embeds[: p.length], p.embeds)


def test_collate_pads_with_ignored_labels(builder):
    a = builder.build_training("Q?", _audio(3), "short answer")
    b = builder.build_training("Q?", _audio(9), "a longer answer than the other")
    batch = collate_training([a, b])
    B, S, D = batch["inputs_embeds"].shape
    assert (B, S, D) == (2, max(a.length, b.length), 64)
    assert batch["attention_mask"][0].sum() == a.length
    assert (batch["labels"][0, a.length:] == IGNORE).all()
