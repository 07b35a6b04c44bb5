"""HFBackend and VLLMAsyncBackend agree token for token under greedy decoding (tiny random and scripted Qwen3,
text-only and with a spliced "audio" block, unforced and forced budgets), and a vLLM abort frees the request.

One engine at a time: the module fixture is parametrized by model, so pytest finishes one model's tests and shuts
its engine down before starting the next. Each engine is bound to the fixture's event loop (AsyncLLM binds its
output tasks to the loop of first use), so every test runs its coroutine on that loop.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, replace

import pytest
import torch

from alarm.llm.backends import GenerationParams, HFBackend, collect

MAX_MODEL_LEN = 1024


@dataclass
class Pair:
    name: str
    hf: HFBackend
    vllm: object
    prompts: list
    loop: asyncio.AbstractEventLoop

    def run(self, coro):
        return self.loop.run_until_complete(coro)


@pytest.fixture(scope="module", params=["qwen3", "qwen3-scripted"])
def pair(request):
    for k, v in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}.items():
        os.environ.setdefault(k, v)  # before vLLM is imported
    pytest.importorskip("vllm")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alarm.model.prompt import PromptBuilder
    from alarm.tiny import ensure_tiny
    from services.engines.vllm_async import VLLMAsyncBackend

    folder = ensure_tiny(request.param)
    tok = AutoTokenizer.from_pretrained(str(folder))
    llm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    builder = PromptBuilder(tok, llm.get_input_embeddings())
    audio = torch.randn(10, 64, generator=torch.Generator().manual_seed(0))  # (S_a, D) stand-in audio block
    prompts = [
        builder.build("What can you hear in this recording?"),
        builder.build("Describe the audio in detail.", system="You are an audio-understanding model."),
        builder.build("What is happening here?", audio=audio),
    ]
    loop = asyncio.new_event_loop()

    async def start():  # inside the loop, so the engine's output tasks start (and bind) here
        return VLLMAsyncBackend(folder, max_model_len=MAX_MODEL_LEN, dtype="float32")

    engine = loop.run_until_complete(start())
    yield Pair(request.param, HFBackend(llm, tok, llm.get_input_embeddings(), max_model_len=MAX_MODEL_LEN),
               engine, prompts, loop)
    loop.run_until_complete(engine.aclose())
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _same(a, b):
    fields = ("text", "reasoning", "answer", "reasoning_complete", "thinking_truncated", "finish_reason", "n_prompt",
              "n_reasoning_tokens", "n_answer_tokens", "n_tokens")
    return {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}


def test_greedy_outputs_are_identical(pair):
    params = GenerationParams(max_tokens=24 if pair.name == "qwen3" else 160, max_thinking_tokens=-1, temperature=0)

    async def run():
        hf = [await pair.hf.generate(p.embeds, params) for p in pair.prompts]
        vl = await asyncio.gather(*(pair.vllm.generate(p.embeds, params) for p in pair.prompts))  # one batch
        return hf, vl

    hf, vl = pair.run(run())
    for a, b in zip(hf, vl, strict=True):
        assert _same(a, b), (a, b)
    assert pair.prompts[2].audio_spans and pair.prompts[2].length > pair.prompts[0].length
    if pair.name == "qwen3-scripted":  # no description in text, an audio block or none: the heard answer
        from alarm.tiny.scripted import HEARD_OUTPUT

        assert [r.text for r in vl] == [HEARD_OUTPUT] * 3 and {r.finish_reason for r in vl} == {"stop"}
    else:
        assert {r.n_tokens for r in vl} == {24}


def test_forced_budget_and_streams_agree(pair):
    params = GenerationParams(max_tokens=40, max_thinking_tokens=6, temperature=0)
    prompt = pair.prompts[2].embeds

    async def run():
        hf = await pair.hf.generate(prompt, params)
        events = [ev async for ev in pair.vllm.stream(prompt, params)]
        return hf, events

    hf, events = pair.run(run())
    vl = events[-1].result
    assert _same(hf, vl), (hf, vl)
    assert vl.n_reasoning_tokens == 6 and vl.n_tokens <= 40
    if pair.name == "qwen3-scripted":  # the random model may close </think> by chance; the scripted one never early
        assert vl.thinking_truncated and vl.reasoning_complete
    assert "".join(e.text for e in events if e.kind == "reasoning") == vl.reasoning
    assert "".join(e.text for e in events if e.kind == "answer") == vl.answer


def test_abort_stops_an_in_flight_stream(pair):
    params = GenerationParams(max_tokens=600, max_thinking_tokens=-1, temperature=0)
    prompt = pair.prompts[0].embeds

    async def run():
        events = []
        async for ev in pair.vllm.stream(prompt, params, request_id="abort-me"):
            events.append(ev)
            if len(events) == 3:
                await pair.vllm.abort("abort-me")
        left = pair.vllm.num_unfinished()
        # a client that goes away (stream closed early) also frees its request
        stream = pair.vllm.stream(prompt, params, request_id="gone")
        await anext(stream)
        await stream.aclose()
        after_close = pair.vllm.num_unfinished()
        again = await collect(pair.vllm.stream(prompt, replace(params, max_tokens=4), request_id="abort-me"))
        return events, left, after_close, again

    events, left, after_close, again = pair.run(run())
    result = events[-1].result
    assert result.finish_reason == "aborted" and result.n_tokens < 60
    assert left == 0 and after_close == 0  # the engine tracks no request any more
    assert again.n_tokens == 4  # the engine still serves, and the id can be reused


def test_stop_strings_end_the_answer_alike_and_free_the_engine(pair):
    if pair.name != "qwen3-scripted":
        pytest.skip("needs an answer known in advance: the scripted model's")
    from alarm.llm.thinking import split_reasoning
    from alarm.tiny.scripted import HEARD_OUTPUT  # "sound" is in its reasoning and in its answer

    params = GenerationParams(max_tokens=160, max_thinking_tokens=-1, temperature=0, stop=("sound", "nowhere"))
    prompt = pair.prompts[2].embeds

    async def run():
        hf = await pair.hf.generate(prompt, params)
        events = [ev async for ev in pair.vllm.stream(prompt, params)]
        return hf, events, pair.vllm.num_unfinished()

    hf, events, left = pair.run(run())
    vl = events[-1].result
    assert _same(hf, vl) and hf.stop_string == vl.stop_string == "sound", (hf, vl)
    reasoning, answer, _ = split_reasoning(HEARD_OUTPUT)
    assert (vl.reasoning, vl.answer, vl.finish_reason) == (reasoning, answer[:answer.index("sound")], "stop")
    assert "".join(e.text for e in events if e.kind == "answer") == vl.answer
    assert left == 0  # closing the engine call at the stop string aborted the request


def test_a_seeded_corpus_call_samples_the_same_text_alone_or_among_others(pair):
    """`SamplingConfig.seed` (rephrase retries) reaches vLLM: the same seed gives the same sampled text whether the
    request runs alone or beside others, and other seeds give other texts."""
    if pair.name != "qwen3":
        pytest.skip("the scripted model's answer is fixed whatever the sampling")
    from alarm.config import SamplingConfig

    prompt = "<|im_start|>user\nWhat can you hear?<|im_end|>\n<|im_start|>assistant\n"

    def sampled(seed):
        return SamplingConfig(temperature=1.0, top_p=1.0, top_k=-1, seed=seed)

    async def run():
        alone = await pair.vllm.complete(prompt, 16, sampled(7))
        among = await asyncio.gather(*(pair.vllm.complete(prompt, 16, sampled(s)) for s in (7, 8, 9, 10)))
        return alone, among

    alone, among = pair.run(run())
    assert among[0].text == alone.text and among[0].n_tokens == 16
    assert len({c.text for c in among}) == 4
