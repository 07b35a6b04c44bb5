"""vLLM loads the scripted tiny Qwen3 like any checkpoint and, greedy, answers with the same two texts as HF."""

from __future__ import annotations

import os

import pytest

from alarm.tiny.scripted import expected_output
from tests.unit.tiny.test_scripted import REPHRASE_CASES, SELF_GENERATION_CASES, prompt_ids

CASES = SELF_GENERATION_CASES + REPHRASE_CASES


@pytest.fixture(scope="module")
def engine():
    for k, v in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}.items():
        os.environ.setdefault(k, v)
    from transformers import AutoTokenizer
    from vllm import LLM

    from alarm.tiny import ensure_tiny

    folder = ensure_tiny("qwen3-scripted")
    llm = LLM(model=str(folder), max_model_len=4096, enforce_eager=True, dtype="float32", enable_prompt_embeds=True)
    return folder, AutoTokenizer.from_pretrained(str(folder)), llm


def test_vllm_greedy_matches_the_scripted_texts(engine):
    import torch
    from safetensors.torch import load_file
    from vllm import SamplingParams

    folder, tok, llm = engine
    params = SamplingParams(temperature=0, max_tokens=120)
    ids = [prompt_ids(tok, msgs) for msgs in CASES]
    outs = llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)
    assert [o.outputs[0].text for o in outs] == [expected_output(m) for m in CASES]
    assert all(o.outputs[0].finish_reason == "stop" for o in outs)

    # the prompt-embeddings path (how the corpus engine may feed prompts) answers the same
    table = load_file(str(folder / "model.safetensors"))["model.embed_tokens.weight"]
    embeds = [{"prompt_embeds": table[torch.tensor(i)]} for i in (ids[0], ids[-1])]
    outs = llm.generate(embeds, params, use_tqdm=False)
    assert [o.outputs[0].text for o in outs] == [expected_output(CASES[0]), expected_output(CASES[-1])]
