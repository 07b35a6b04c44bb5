"""Backends: the async two-phase budget over a scripted phase, the incremental reasoning/answer split, and the
transformers backend on the scripted tiny Qwen3 (unary, streamed, forced, aborted)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest
import torch

from alarm.errors import InvalidInput
from alarm.llm.backends import (
    Backend,
    GenerationParams,
    HFBackend,
    PhaseDelta,
    ThinkSplitter,
    run_with_budget,
)
from alarm.llm.thinking import FORCING_SUFFIX, split_reasoning

END_ID, OTHER_ID, D, S = 99, 7, 4, 5
GREEDY = dict(temperature=0.0)


class ScriptedPhase:
    """Fake engine call: call k replays script k one token per delta, cut at max_tokens ("length"), else "stop"."""

    def __init__(self, *scripts: list[str], finish: str = "stop"):
        self.scripts, self.finish = scripts, finish
        self.calls: list[tuple[torch.Tensor, int]] = []
        self.sent = 0  # tokens handed out, over all calls

    async def __call__(self, embeds: torch.Tensor, max_tokens: int):
        self.calls.append((embeds, max_tokens))
        tokens = self.scripts[len(self.calls) - 1]
        for t in tokens[:max_tokens]:
            self.sent += 1
            yield PhaseDelta(t, (END_ID if t == "</think>" else OTHER_ID,))
        yield PhaseDelta("", (), "length" if len(tokens) > max_tokens else self.finish)


class Embedder:
    """Fake embedding table: one row of 2.0 per character; records what it embedded."""

    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, text: str) -> torch.Tensor:
        self.texts.append(text)
        return torch.full((len(text), D), 2.0)


def budget(phase, params, embed=None):
    events = asyncio.run(_events(phase, params, embed or Embedder()))
    assert events[-1].kind == "final" and all(e.kind != "final" for e in events[:-1])
    return events, events[-1].result


async def _events(phase, params, embed):
    return [ev async for ev in run_with_budget(phase, embed, torch.zeros(S, D), params, end_think_id=END_ID)]


def joined(events, kind):
    return "".join(e.text for e in events if e.kind == kind)


REASONED = ["I", " hear", " a", " dog", ".\n", "</think>", "\n\n", "A", " dog", "."]


def test_no_forcing_when_the_reasoning_closes_within_budget():
    phase = ScriptedPhase(REASONED)
    events, r = budget(phase, GenerationParams(max_tokens=100, max_thinking_tokens=20, **GREEDY))
    assert [(e.shape[0], cap) for e, cap in phase.calls] == [(S, 20)]
    assert (r.reasoning, r.answer, r.reasoning_complete, r.thinking_truncated) == ("I hear a dog.", "A dog.", True, False)
    assert (r.finish_reason, r.n_prompt, r.n_reasoning_tokens, r.n_answer_tokens, r.n_tokens) == ("stop", S, 6, 4, 10)
    assert joined(events, "reasoning") == r.reasoning and joined(events, "answer") == r.answer
    kinds = [e.kind for e in events[:-1]]
    assert kinds == sorted(kinds, key=["reasoning", "answer"].index)  # all reasoning before any answer
    assert r.first_token_ms is not None and r.decode_ms >= r.first_token_ms


def test_forcing_appends_the_suffix_embeds_and_caps_the_total():
    phase, embed = ScriptedPhase(["Hmm"] * 50, ["A", " cat", " purrs"]), Embedder()
    events, r = budget(phase, GenerationParams(max_tokens=10, max_thinking_tokens=8, **GREEDY), embed)
    prefix = "Hmm" * 8 + FORCING_SUFFIX
    assert embed.texts == [prefix]
    (e1, cap1), (e2, cap2) = phase.calls
    assert (cap1, cap2) == (8, 2)  # phase 2 gets max_tokens - phase-1 tokens
    assert e2.shape == (S + len(prefix), D) and torch.equal(e2[:S], e1) and bool((e2[S:] == 2.0).all())
    assert r.text == prefix + "A cat" and r.thinking_truncated and r.reasoning_complete
    assert r.finish_reason == "length" and r.n_tokens == 10 == r.n_reasoning_tokens + r.n_answer_tokens
    assert (r.n_reasoning_tokens, r.n_answer_tokens) == (8, 2)
    assert r.reasoning == "Hmm" * 8 + FORCING_SUFFIX.split("\n")[0] and r.answer == "A cat"
    assert joined(events, "reasoning") == r.reasoning and joined(events, "answer") == r.answer


def test_a_budget_of_0_closes_the_reasoning_before_the_first_token():
    phase, embed = ScriptedPhase(["A", " cat", "."]), Embedder()
    events, r = budget(phase, GenerationParams(max_tokens=10, max_thinking_tokens=0, **GREEDY), embed)
    assert embed.texts == [FORCING_SUFFIX] and [(e.shape[0], cap) for e, cap in phase.calls] == [
        (S + len(FORCING_SUFFIX), 10)]  # one call: the prompt, the forcing sentence, then the answer
    assert r.text == FORCING_SUFFIX + "A cat." and r.answer == "A cat." and r.thinking_truncated
    assert r.reasoning == FORCING_SUFFIX.split("\n")[0] and (r.n_reasoning_tokens, r.n_answer_tokens) == (0, 3)
    assert joined(events, "reasoning") == r.reasoning and joined(events, "answer") == r.answer


def test_no_phase_2_when_phase_1_used_up_max_tokens():
    phase = ScriptedPhase(["Hmm"] * 50)
    _, r = budget(phase, GenerationParams(max_tokens=8, max_thinking_tokens=50, **GREEDY))
    assert [cap for _, cap in phase.calls] == [8]
    assert (r.finish_reason, r.thinking_truncated, r.reasoning_complete, r.answer) == ("length", False, False, "")
    assert r.n_reasoning_tokens == r.n_tokens == 8


def test_unlimited_budget_is_one_call_with_max_tokens():
    phase = ScriptedPhase(["Hmm"] * 50)
    _, r = budget(phase, GenerationParams(max_tokens=30, max_thinking_tokens=-1, **GREEDY))
    assert [cap for _, cap in phase.calls] == [30] and r.n_tokens == 30 and not r.thinking_truncated


def test_an_answer_cut_by_the_budget_continues_unforced():
    phase, embed = ScriptedPhase(REASONED, [" dog", "."]), Embedder()
    _, r = budget(phase, GenerationParams(max_tokens=100, max_thinking_tokens=8, **GREEDY), embed)
    assert embed.texts == ["I hear a dog.\n</think>\n\nA"]  # no forcing sentence
    assert [cap for _, cap in phase.calls] == [8, 92]
    assert r.text == "".join(REASONED) and not r.thinking_truncated and r.finish_reason == "stop"
    assert (r.n_reasoning_tokens, r.n_answer_tokens) == (6, 4)


def test_an_aborted_phase_1_is_final():
    phase = ScriptedPhase(["Hmm"] * 3, finish="aborted")
    _, r = budget(phase, GenerationParams(max_tokens=100, max_thinking_tokens=8, **GREEDY))
    assert len(phase.calls) == 1 and r.finish_reason == "aborted" and not r.thinking_truncated


# -- stop strings: the answer only -------------------------------------------------------------------------------


def test_a_stop_string_ends_the_answer_and_the_engine_call_but_never_the_reasoning():
    phase = ScriptedPhase([*REASONED, " and", " a", " dog"])
    events, r = budget(phase, GenerationParams(max_tokens=100, max_thinking_tokens=20, stop=("dog",), **GREEDY))
    assert (r.reasoning, r.answer, r.finish_reason, r.stop_string) == ("I hear a dog.", "A ", "stop", "dog")
    assert r.text == "I hear a dog.\n</think>\n\nA " and r.reasoning_complete
    assert (r.n_reasoning_tokens, r.n_answer_tokens, r.n_tokens) == (6, 3, 9)  # up to the token that completed it
    assert phase.sent == 9  # the engine call was closed there: not one token more was asked for
    assert joined(events, "reasoning") == r.reasoning and joined(events, "answer") == r.answer


def test_a_stop_string_only_in_the_reasoning_changes_nothing():
    _, plain = budget(ScriptedPhase(REASONED), GenerationParams(max_tokens=100, **GREEDY))
    _, r = budget(ScriptedPhase(REASONED), GenerationParams(max_tokens=100, stop=("hear", "I"), **GREEDY))
    assert r == replace(plain, first_token_ms=r.first_token_ms, decode_ms=r.decode_ms) and r.stop_string is None


def test_a_stop_string_across_the_unforced_continuation():
    phase = ScriptedPhase(REASONED, [" dog", ".", " Then"])  # phase 1 ends on the budget after "A"
    events, r = budget(phase, GenerationParams(max_tokens=100, max_thinking_tokens=8, stop=("A dog",), **GREEDY))
    assert len(phase.calls) == 2 and (r.answer, r.finish_reason, r.stop_string) == ("", "stop", "A dog")
    assert (r.n_answer_tokens, r.n_tokens) == (3, 9) and phase.sent == 9 and joined(events, "answer") == ""


def test_a_stop_string_in_the_forced_answer():
    phase = ScriptedPhase(["Hmm"] * 50, ["A", " cat", " purrs", ".", " Then"])
    events, r = budget(phase, GenerationParams(max_tokens=100, max_thinking_tokens=8, stop=("purr",), **GREEDY))
    assert r.thinking_truncated and (r.answer, r.finish_reason, r.stop_string) == ("A cat ", "stop", "purr")
    assert (r.n_reasoning_tokens, r.n_answer_tokens) == (8, 3) and phase.sent == 11
    assert joined(events, "answer") == "A cat " and r.text.endswith(FORCING_SUFFIX + "A cat ")


VOCAB = ["</think>", "\n\n", "The", " dog", " barks", " loudly", " now"]


async def merged_phase(embeds, max_tokens):
    """An engine that merged steps (vLLM does when its consumer lags): several tokens per delta."""
    for ids in ([0, 1], [2, 3, 4, 5], [6]):
        yield PhaseDelta("".join(VOCAB[i] for i in ids), tuple(ids))
    yield PhaseDelta("", (), "stop")


@pytest.mark.parametrize("stop", [" barks", " bar", "barks lo"])
def test_tokens_merged_after_the_one_completing_a_stop_string_are_not_counted(stop):
    params = GenerationParams(max_tokens=100, max_thinking_tokens=-1, stop=(stop,), **GREEDY)

    async def run(detokenize):
        return [ev async for ev in run_with_budget(merged_phase, Embedder(), torch.zeros(S, D), params,
                                                   end_think_id=0, detokenize=detokenize)][-1].result

    exact = asyncio.run(run(lambda ids: "".join(VOCAB[i] for i in ids)))
    kept = 6 if stop == "barks lo" else 5  # "</think>" .. the token that completes the stop string
    assert (exact.answer, exact.n_tokens, exact.n_answer_tokens) == ("The dog" + " " * (stop[0] != " "), kept, kept - 1)
    assert asyncio.run(run(None)).n_tokens == 6  # without a detokenizer: the whole delta


SPLIT_CASES = [
    "I hear a dog.\n</think>\n\nA dog.",
    "  \n reasoning with  inner  spaces \n\n</think>\n\n\nanswer\n",
    "<think>\nexplicit open tag</think>answer right away",
    "never closes, ends in a partial </thi",
    "ends with trailing space   ",
    "</think>\n\nno reasoning at all",
    "<thi not a tag</think>x",
    "a < b and c </ d </think>\n\nend",
    "",
    "\n\n\n",
]


@pytest.mark.parametrize("text", SPLIT_CASES)
def test_think_splitter_matches_split_reasoning_for_any_chunking(text):
    rng = random.Random(0)
    want = split_reasoning(text)[:2]
    for _ in range(30):
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        splitter, events = ThinkSplitter(), []
        for p in pieces:
            events += splitter.feed(p)
        events += splitter.flush()
        assert (joined(events, "reasoning"), joined(events, "answer")) == want, pieces
        assert all(e.text for e in events)


@pytest.mark.parametrize("bad", [
    dict(max_tokens=0), dict(max_thinking_tokens=-2), dict(temperature=-0.1),
    dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1),
])
def test_generation_params_reject_bad_values(bad):
    with pytest.raises(InvalidInput, match=next(iter(bad))):
        GenerationParams(**bad)


# -- HFBackend on the scripted tiny Qwen3 ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alarm.model.prompt import PromptBuilder
    from alarm.tiny import ensure_tiny

    folder = ensure_tiny("qwen3-scripted")
    tok = AutoTokenizer.from_pretrained(str(folder))
    llm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    backend = HFBackend(llm, tok, llm.get_input_embeddings())
    prompt = PromptBuilder(tok, llm.get_input_embeddings()).build("What can you hear in this recording?")
    return backend, tok, prompt


def test_hf_greedy_generate_returns_the_scripted_answer(hf):
    from alarm.tiny.scripted import HEARD_OUTPUT  # a question without a description in text

    backend, tok, prompt = hf
    assert isinstance(backend, Backend)
    r = asyncio.run(backend.generate(prompt.embeds, GenerationParams(max_tokens=200, **GREEDY)))
    assert r.text == HEARD_OUTPUT and r.finish_reason == "stop"
    assert (r.reasoning, r.answer, r.reasoning_complete) == split_reasoning(HEARD_OUTPUT)
    n = len(tok.encode(HEARD_OUTPUT, add_special_tokens=False))
    assert r.n_tokens == n + 1 and r.n_prompt == prompt.length  # + the <|im_end|> that stopped it
    assert r.n_reasoning_tokens == len(tok.encode(HEARD_OUTPUT.split("</think>")[0] + "</think>",
                                                  add_special_tokens=False))


def test_hf_stream_yields_reasoning_then_answer_deltas_that_make_the_unary_result(hf):
    backend, _, prompt = hf
    params = GenerationParams(max_tokens=200, **GREEDY)

    async def both():
        return await backend.generate(prompt.embeds, params), [ev async for ev in backend.stream(prompt.embeds, params)]

    unary, events = asyncio.run(both())
    kinds = [e.kind for e in events]
    assert kinds[-1] == "final" and kinds.count("final") == 1
    first_answer = kinds.index("answer")
    assert kinds.count("reasoning") > 10 and kinds.count("answer") > 5 and "reasoning" not in kinds[first_answer:]
    final = events[-1].result
    assert joined(events, "reasoning") == final.reasoning == unary.reasoning
    assert joined(events, "answer") == final.answer == unary.answer
    assert final.text == unary.text


def test_hf_stop_string_cuts_the_answer_not_the_reasoning(hf):
    from alarm.tiny.scripted import HEARD_OUTPUT  # "sound" is in its reasoning and in its answer

    backend, tok, prompt = hf
    params = GenerationParams(max_tokens=200, stop=("sound",), **GREEDY)

    async def both():
        return await backend.generate(prompt.embeds, params), [ev async for ev in backend.stream(prompt.embeds, params)]

    r, events = asyncio.run(both())
    reasoning, answer, _ = split_reasoning(HEARD_OUTPUT)
    assert "sound" in reasoning and r.reasoning == reasoning
    assert (r.answer, r.finish_reason, r.stop_string) == (answer[:answer.index("sound")], "stop", "sound")
    ids = tok.encode(HEARD_OUTPUT, add_special_tokens=False)
    through = next(k for k in range(len(ids)) if tok.decode(ids[:k]).count("sound") == 2)
    assert r.n_tokens == through and r.n_reasoning_tokens + r.n_answer_tokens == through
    assert joined(events, "answer") == r.answer and events[-1].result == replace(
        r, first_token_ms=events[-1].result.first_token_ms, decode_ms=events[-1].result.decode_ms)


def test_hf_small_thinking_budget_forces_and_still_finishes(hf):
    backend, tok, prompt = hf
    r = asyncio.run(backend.generate(prompt.embeds, GenerationParams(max_tokens=200, max_thinking_tokens=5, **GREEDY)))
    assert r.thinking_truncated and r.reasoning_complete and r.finish_reason == "stop" and r.answer
    assert r.n_reasoning_tokens == 5 and r.n_tokens <= 200
    assert FORCING_SUFFIX in r.text and r.reasoning.endswith("directly now.")


def test_hf_abort_and_early_close_stop_the_request(hf):
    backend, _, prompt = hf
    params = GenerationParams(max_tokens=200, max_thinking_tokens=-1, **GREEDY)

    async def abort_after_two():
        events = []
        async for ev in backend.stream(prompt.embeds, params, request_id="r-abort"):
            events.append(ev)
            if len(events) == 2:
                await backend.abort("r-abort")
        return events

    events = asyncio.run(abort_after_two())
    assert events[-1].result.finish_reason == "aborted" and events[-1].result.n_tokens < 30
    assert not backend._inflight

    async def close_early():
        stream = backend.stream(prompt.embeds, params, request_id="r-close")
        await anext(stream)
        await stream.aclose()
        return await backend.generate(prompt.embeds, GenerationParams(max_tokens=3, **GREEDY), request_id="r-close")

    assert asyncio.run(close_early()).n_tokens == 3  # the id is free again and the backend still serves


def test_hf_seeded_sampling_repeats(hf):
    backend, _, prompt = hf
    params = GenerationParams(max_tokens=16, temperature=1.5, top_k=0, seed=3)
    a, b = (asyncio.run(backend.generate(prompt.embeds, params)) for _ in range(2))
    assert a.text == b.text and a.n_tokens == 16


def test_hf_rejects_bad_prompts(hf):
    backend, _, _ = hf

    async def first(embeds):
        return await backend.generate(embeds, GenerationParams())

    with pytest.raises(InvalidInput, match=r"\(S, 64\)"):
        asyncio.run(first(torch.zeros(3, 32)))
