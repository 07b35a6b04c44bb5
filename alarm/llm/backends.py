"""LLM backends for serving: prompt embeddings `(S, D)` in, reasoning + answer out, unary or streamed.

    backend = HFBackend(llm, tokenizer, embed_tokens)             # transformers, in-process (tests, fallback)
    result = await backend.generate(prompt.embeds, GenerationParams(max_tokens=512, max_thinking_tokens=128))
    async for ev in backend.stream(prompt.embeds, params):        # ev.kind: "reasoning" | "answer" | "final"
        ...

Every backend implements one `Backend` protocol; the vLLM one lives in `services/engines/vllm_async.py` (this
module imports no ray / vllm / grpc). The two-phase thinking budget (ALARM's, as in its generate_vllm.py) is implemented once, in
`run_with_budget`, over a backend's `phase(prompt_embeds, max_tokens)` stream of token deltas. Unlike the reference,
`max_tokens` bounds phase 1 + phase 2 together (phase 2 gets `max_tokens - phase1_tokens`).

The prompt already ends with `<|im_start|>assistant\\n<think>\\n`, so the generated text is
`reasoning…</think>\\n\\nanswer`; `ThinkSplitter` splits it incrementally exactly as `split_reasoning` does at the
end, so concatenated stream deltas equal the final result's `reasoning` and `answer`. Stop strings
(`GenerationParams.stop`) apply to the answer only, never to the reasoning (`alarm.llm.stop`): the engine request
ends where one completes, on every backend alike.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import nn

from alarm.errors import CheckpointMismatch, InvalidInput
from alarm.llm.limits import length_problem, sampled_temperature, sampling_problem, stop_problem
from alarm.llm.stop import StopStrings, partial_suffix
from alarm.llm.thinking import END_THINK, FORCING_SUFFIX, Completion, needs_forcing, split_reasoning

START_THINK = "<think>"
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")  # Qwen3 end of turn, end of text
FINISH_REASONS = ("stop", "length", "aborted")


@dataclass(frozen=True)
class GenerationParams:
    """Per-request generation settings, already resolved (the RPC layer maps its 0 = default values).

    Attributes:
        max_tokens: Cap on new tokens, reasoning and answer together (the forcing sentence is not counted).
        max_thinking_tokens: Phase-1 budget in new tokens; -1 = unlimited (one call); 0 = no thinking (no phase
            1: the forcing sentence closes the reasoning at once).
        temperature: In [0, 2]; 0 = greedy (the ranges are `alarm.llm.limits`, vLLM's).
        top_p: In (0, 1]; 1 = disabled.
        top_k: >= 0; 0 = disabled.
        seed: Per-request sampling seed in [0, 2^63 - 1]; None = non-deterministic.
        stop: Up to 4 stop strings (1-64 characters each) that end the answer, excluded from it; matched in the
            answer only, so the reasoning may hold them.
    """

    max_tokens: int = 8192
    max_thinking_tokens: int = 1024
    temperature: float = 0.6  # Qwen3-Thinking-2507's recommended sampling
    top_p: float = 0.95
    top_k: int = 20
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "stop", tuple(self.stop))
        problem = (length_problem(self.max_tokens, self.max_thinking_tokens)
                   or sampling_problem(self.temperature, self.top_p, self.top_k, self.seed))
        if problem is not None:
            name, want = problem
            raise InvalidInput(f"{name} must be {want}, found {getattr(self, name)!r}")
        if (message := stop_problem(self.stop)) is not None:
            raise InvalidInput(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class GenerationResult:
    """One finished request.

    Attributes:
        text: All generated text: phase 1, plus FORCING_SUFFIX and phase 2 when forced; cut before the stop string
            when one ended the answer.
        reasoning: Text before `</think>`, whitespace-trimmed (all of `text` if it never closed).
        answer: Text after `</think>`, leading newlines removed ("" if it never closed), up to the stop string.
        reasoning_complete: `</think>` was generated or forced.
        thinking_truncated: The budget ran out and the forcing sentence closed the reasoning (phase 2 ran).
        finish_reason: "stop" | "length" | "aborted" (of the last phase that ran; "stop" when a stop string
            ended the answer).
        n_prompt: Prompt positions S.
        n_reasoning_tokens: New tokens up to and including `</think>` (all of phase 1 if forced or unclosed).
        n_answer_tokens: New tokens after it (including the end-of-turn token, or the token that completed the
            stop string: those generated after it are not counted, as in vLLM).
        n_tokens: All new tokens (the forcing sentence is prompt, not counted).
        first_token_ms: From the start of the request to its first new token (None if none).
        decode_ms: From the start of the request to its end.
        stop_string: The stop string that ended the answer, or None.
    """

    text: str
    reasoning: str
    answer: str
    reasoning_complete: bool
    thinking_truncated: bool
    finish_reason: str
    n_prompt: int
    n_reasoning_tokens: int
    n_answer_tokens: int
    n_tokens: int
    first_token_ms: float | None = None
    decode_ms: float = 0.0
    stop_string: str | None = None


@dataclass(frozen=True)
class StreamEvent:
    """A reasoning or answer text delta, or the final event carrying the result (always last, exactly once)."""

    kind: Literal["reasoning", "answer", "final"]
    text: str = ""
    result: GenerationResult | None = None


@dataclass(frozen=True)
class PhaseDelta:
    """New tokens of one engine call. The last delta of a call has `finish_reason` set (its text may be empty)."""

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: str | None = None


Phase = Callable[[torch.Tensor, int], AsyncIterator[PhaseDelta]]  # (prompt_embeds (S, D), max_tokens) -> deltas


@runtime_checkable
class Backend(Protocol):
    """An LLM engine fed with prompt embeddings. Request ids are unique among in-flight requests."""

    async def generate(
        self, prompt_embeds: torch.Tensor, params: GenerationParams, *, request_id: str | None = None
    ) -> GenerationResult:
        """Run one request to the end. prompt_embeds `(S, D)`."""
        ...

    def stream(
        self, prompt_embeds: torch.Tensor, params: GenerationParams, *, request_id: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Async generator: reasoning deltas, then answer deltas, then one "final" event. Closing it early
        aborts the request."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop an in-flight request (frees its KV cache); its stream ends with finish_reason "aborted".
        Unknown or finished ids are ignored."""
        ...


# -- reasoning / answer split ----------------------------------------------------------------------------------


class ThinkSplitter:
    """Incremental `split_reasoning`: feed text deltas, get reasoning and answer events whose concatenations equal
    `split_reasoning(full_text)[:2]` (held back: leading `<think>`, whitespace at the edges, a split `</think>`)."""

    def __init__(self):
        self.buf = ""  # reasoning text not yet emitted
        self.head_done = False  # a leading "<think>" has been ruled out or removed
        self.started = False  # some reasoning was emitted (leading whitespace is stripped before that)
        self.in_answer = False
        self.answer_started = False

    def feed(self, text: str) -> list[StreamEvent]:
        if self.in_answer:
            return self._answer(text)
        self.buf += text
        if not self.head_done:
            body = self.buf.lstrip()
            if len(body) < len(START_THINK) and START_THINK.startswith(body):
                return []  # may still become "<think>"
            self.buf = body[len(START_THINK):] if body.startswith(START_THINK) else body
            self.head_done = True
        if not self.started:
            self.buf = self.buf.lstrip()
        reasoning, found, rest = self.buf.partition(END_THINK)
        if found:
            self.buf, self.in_answer = "", True
            out = [StreamEvent("reasoning", r)] if (r := reasoning.rstrip()) else []
            return out + self._answer(rest)
        ready = self.buf[: len(self.buf) - partial_suffix(self.buf, END_THINK)].rstrip()
        if not ready:
            return []
        self.buf, self.started = self.buf[len(ready):], True
        return [StreamEvent("reasoning", ready)]

    def flush(self) -> list[StreamEvent]:
        """End of text: release held reasoning (a held partial `</think>` was reasoning after all)."""
        if self.in_answer:
            return []
        body = self.buf
        if not self.head_done:
            body = body.lstrip()
            body = body[len(START_THINK):] if body.startswith(START_THINK) else body
        body = (body if self.started else body.lstrip()).rstrip()
        self.buf = ""
        return [StreamEvent("reasoning", body)] if body else []

    def _answer(self, text: str) -> list[StreamEvent]:
        if not self.answer_started:
            text = text.lstrip("\n")
            self.answer_started = bool(text)
        return [StreamEvent("answer", text)] if text else []


# -- the two-phase thinking budget ------------------------------------------------------------------------------


async def run_with_budget(
    phase: Phase,
    embed_text: Callable[[str], torch.Tensor],
    prompt_embeds: torch.Tensor,
    params: GenerationParams,
    *,
    end_think_id: int,
    detokenize: Callable[[list[int]], str] | None = None,
) -> AsyncIterator[StreamEvent]:
    """Generate with the two-phase thinking budget, streaming reasoning and answer deltas, then the final result.

    Phase 1 runs with `min(max_thinking_tokens, max_tokens)` (or `max_tokens` alone when the budget is -1; not at
    all when it is 0, as if it had stopped on length at once). If it stopped on length without closing `</think>`,
    the forcing sentence is appended (as embeddings of phase-1 text + FORCING_SUFFIX after the prompt) and phase 2
    runs with the `max_tokens - phase1_tokens` left, if any. If it
    stopped on length after closing `</think>`, phase 2 continues the answer from the phase-1 text, unforced (the
    reference would return the answer cut at the budget). When a stop string completes in the answer, the engine
    call is closed (which aborts it) and the request ends with finish_reason "stop".

    Args:
        phase: One engine call: `(prompt_embeds (S, D), max_tokens)` -> async iterator of PhaseDelta.
        embed_text: Text -> its token embeddings `(N, D)` (the frozen input table).
        prompt_embeds: `(S, D)`.
        params: Resolved generation parameters.
        end_think_id: Token id of `</think>`, to count reasoning vs answer tokens.
        detokenize: Token ids -> text as the engine streams it; with it, tokens that came in the same delta as
            the one completing a stop string but after it are not counted (an engine may merge steps).
    """
    run = _Run(phase, params.stop, detokenize)
    budget = params.max_thinking_tokens
    p1, p2 = _PhaseOut(), _PhaseOut()
    if budget == 0:  # no thinking: phase 1 ends before it starts, so the forcing sentence comes first
        p1.fin = "length"
    else:
        cap1 = params.max_tokens if budget < 0 else min(budget, params.max_tokens)
        async with aclosing(run.phase(prompt_embeds, cap1, p1, "phase 1")) as events:
            async for ev in events:
                yield ev

    # Phase 2 when the budget (not EOS, not a stop string) ended phase 1 and tokens are left: forced if still
    # reasoning; a plain continuation if the reasoning closed in time, so the answer is never cut by the budget
    left = params.max_tokens - len(p1.ids)
    forced = needs_forcing(Completion(p1.text, len(p1.ids), p1.fin))
    phase2 = budget >= 0 and p1.fin == "length" and left > 0
    if phase2:
        for ev in run.feed(FORCING_SUFFIX if forced else ""):
            yield ev
        prefix = p1.text + FORCING_SUFFIX if forced else p1.text
        tail = embed_text(prefix).to(device=prompt_embeds.device, dtype=prompt_embeds.dtype)  # (N, D)
        async with aclosing(run.phase(torch.cat([prompt_embeds, tail]), left, p2, "phase 2")) as events:  # (S + N, D)
            async for ev in events:
                yield ev
    forced = forced and phase2
    for ev in run.flush():
        yield ev

    text = p1.text + (FORCING_SUFFIX if forced else "") + p2.text
    reasoning, answer, complete = split_reasoning(text)
    if run.stops.hit is not None:  # the answer (a suffix of text) ends before the stop string
        text, answer = text[:len(text) - len(answer) + run.stops.sent], answer[:run.stops.sent]
    ids1, ids2 = p1.ids, p2.ids
    n1 = ids1.index(end_think_id) + 1 if end_think_id in ids1 else len(ids1)
    result = GenerationResult(
        text=text, reasoning=reasoning, answer=answer, reasoning_complete=complete, thinking_truncated=forced,
        finish_reason=p2.fin if phase2 else p1.fin, n_prompt=prompt_embeds.shape[0], n_reasoning_tokens=n1,
        n_answer_tokens=len(ids1) - n1 + len(ids2), n_tokens=len(ids1) + len(ids2),
        first_token_ms=run.first_ms, decode_ms=(time.perf_counter() - run.t0) * 1e3, stop_string=run.stops.hit,
    )
    yield StreamEvent("final", result=result)


@dataclass
class _PhaseOut:
    """What one engine call produced: its text, token ids and finish reason, and how many tokens its last delta
    held."""

    text: str = ""
    ids: list[int] = field(default_factory=list)
    fin: str | None = None
    last: int = 0


class _Run:
    """One request's engine calls through the reasoning/answer split and the stop strings."""

    def __init__(self, phase: Phase, stop: tuple[str, ...], detokenize: Callable[[list[int]], str] | None):
        self.call, self.detokenize = phase, detokenize
        self.splitter, self.stops = ThinkSplitter(), StopStrings(stop)
        self.t0, self.first_ms = time.perf_counter(), None

    async def phase(self, embeds: torch.Tensor, cap: int, out: _PhaseOut, where: str) -> AsyncIterator[StreamEvent]:
        """Run one engine call into `out`, yielding its events; closed early (it aborts) at a stop string."""
        async with aclosing(self.call(embeds, cap)) as deltas:  # closed at once when our consumer leaves early
            async for d in deltas:
                if d.token_ids and self.first_ms is None:
                    self.first_ms = (time.perf_counter() - self.t0) * 1e3
                out.ids.extend(d.token_ids)
                out.text, out.fin, out.last = out.text + d.text, d.finish_reason or out.fin, len(d.token_ids)
                for ev in self.feed(d.text):
                    yield ev
                if self.stops.hit is not None:
                    out.fin = "stop"
                    self._drop_after_stop(out)
                    break
        _check_finish(out.fin, where)

    def feed(self, text: str) -> list[StreamEvent]:
        """Reasoning events as they are; answer text through the stop strings."""
        return self._filter(self.splitter.feed(text))

    def flush(self) -> list[StreamEvent]:
        tail = self.stops.flush()
        return self._filter(self.splitter.flush()) + ([StreamEvent("answer", tail)] if tail else [])

    def _filter(self, events: list[StreamEvent]) -> list[StreamEvent]:
        out = []
        for ev in events:
            if ev.kind != "answer":
                out.append(ev)
            elif text := self.stops.feed(ev.text):
                out.append(StreamEvent("answer", text))
        return out

    def _drop_after_stop(self, out: _PhaseOut) -> None:
        """Uncount the tokens of the last delta that start after the stop string's end (vLLM keeps the tokens up to
        the one completing it)."""
        end = len(out.text) - self.stops.after  # where the stop string ends in this call's text
        for _ in range(out.last - 1 if self.detokenize and self.stops.after else 0):
            if len(self.detokenize(out.ids[:-1])) < end:
                break
            out.ids.pop()


def _check_finish(fin: str | None, where: str) -> None:
    if fin not in FINISH_REASONS:
        raise RuntimeError(f"backend {where} ended with finish_reason={fin!r}; expected one of {FINISH_REASONS}")


async def collect(events: AsyncIterator[StreamEvent]) -> GenerationResult:
    """Drain a stream to its final result."""
    async for ev in events:
        if ev.kind == "final":
            assert ev.result is not None
            return ev.result
    raise RuntimeError("the stream ended without a final event")


def token_id(tokenizer, token: str) -> int:
    """The id of a single-token string, or CheckpointMismatch (ALARM needs Qwen3's thinking tokens)."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise CheckpointMismatch(f"tokenizer encodes {token!r} as {ids}; a Qwen3 thinking tokenizer has it as one token")
    return ids[0]


def check_prompt(prompt_embeds: torch.Tensor, hidden: int, max_model_len: int | None) -> None:
    if prompt_embeds.ndim != 2 or prompt_embeds.shape[1] != hidden or prompt_embeds.shape[0] < 1:
        raise InvalidInput(f"prompt_embeds must be (S, {hidden}) with S >= 1, found {tuple(prompt_embeds.shape)}")
    if max_model_len is not None and prompt_embeds.shape[0] >= max_model_len:
        raise InvalidInput(
            f"the prompt takes {prompt_embeds.shape[0]} positions, leaving no room in max_model_len={max_model_len}; "
            "shorten the audio or the prompt"
        )


# -- transformers backend -------------------------------------------------------------------------------------


class HFBackend:
    """A transformers causal LM as a `Backend`: `generate(inputs_embeds=…)` in a worker thread, tokens streamed
    back to the event loop as they are sampled. One request decodes at a time (a reference and test backend;
    serving uses vLLM).

    Args:
        llm: A causal LM (e.g. `alarm.model.llm.load_llm`), eval mode.
        tokenizer: Its tokenizer (Qwen3: `</think>` is an ordinary token, so it survives skip_special_tokens).
        embed_tokens: The LLM's input embedding `(V, D)` (embeds the phase-2 continuation).
        max_model_len: Prompt + new tokens cap (default: the model's max_position_embeddings).
    """

    def __init__(self, llm: nn.Module, tokenizer, embed_tokens: nn.Embedding, *, max_model_len: int | None = None):
        self.llm, self.tok, self.embed_tokens = llm.eval(), tokenizer, embed_tokens
        self.max_model_len = max_model_len or getattr(llm.config, "max_position_embeddings", None)
        self.stop_ids = [token_id(tokenizer, t) for t in STOP_TOKENS]
        self.end_think_id = token_id(tokenizer, END_THINK)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[-1]
        self._lock = threading.Lock()  # one generate() at a time (and torch.manual_seed stays per request)
        self._inflight: dict[str, threading.Event] = {}

    def embed_text(self, text: str) -> torch.Tensor:
        ids = self.tok.encode(text, add_special_tokens=False)
        with torch.no_grad():
            return self.embed_tokens(torch.tensor(ids, dtype=torch.long, device=self.embed_tokens.weight.device))

    def detokenize(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    async def generate(
        self, prompt_embeds: torch.Tensor, params: GenerationParams, *, request_id: str | None = None
    ) -> GenerationResult:
        return await collect(self.stream(prompt_embeds, params, request_id=request_id))

    async def stream(
        self, prompt_embeds: torch.Tensor, params: GenerationParams, *, request_id: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        rid = request_id or uuid.uuid4().hex
        if rid in self._inflight:
            raise InvalidInput(f"request_id {rid!r} is already in flight; request ids must be unique")
        check_prompt(prompt_embeds, self.embed_tokens.embedding_dim, self.max_model_len)
        stop = self._inflight[rid] = threading.Event()

        def phase(embeds: torch.Tensor, max_tokens: int) -> AsyncIterator[PhaseDelta]:
            return self._phase(embeds, max_tokens, params, stop)

        try:
            async with aclosing(run_with_budget(phase, self.embed_text, prompt_embeds, params,
                                                end_think_id=self.end_think_id, detokenize=self.detokenize)) as events:
                async for ev in events:
                    yield ev
        finally:
            stop.set()  # a consumer that stops early (cancel, deadline) also stops the decoding thread
            self._inflight.pop(rid, None)

    async def abort(self, request_id: str) -> None:
        if (stop := self._inflight.get(request_id)) is not None:
            stop.set()

    async def _phase(
        self, embeds: torch.Tensor, max_tokens: int, params: GenerationParams, stop: threading.Event
    ) -> AsyncIterator[PhaseDelta]:
        if self.max_model_len is not None:
            max_tokens = min(max_tokens, self.max_model_len - embeds.shape[0])
        if stop.is_set() or max_tokens <= 0:
            yield PhaseDelta("", (), "aborted" if stop.is_set() else "length")
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[int] | None] = asyncio.Queue()
        streamer = _QueueStreamer(lambda item: loop.call_soon_threadsafe(queue.put_nowait, item))
        task = asyncio.ensure_future(asyncio.to_thread(self._decode, embeds, max_tokens, params, stop, streamer))
        detok = _Detokenizer(self.tok)
        ids: list[int] = []
        try:
            while (new := await queue.get()) is not None:
                ids += new
                yield PhaseDelta(detok.push(new), tuple(new))
            await task  # re-raises a failure in the thread
        finally:
            if not task.done():  # the consumer left early: end the decoding thread
                stop.set()
        last = ids[-1] if ids else None
        fin = "aborted" if stop.is_set() else "stop" if last in self.stop_ids or len(ids) < max_tokens else "length"
        yield PhaseDelta(detok.flush(), (), fin)

    def _decode(self, embeds, max_tokens, params: GenerationParams, stop: threading.Event, streamer) -> None:
        from transformers import GenerationConfig, StoppingCriteriaList

        # explicit neutral values when greedy: None would be filled from the checkpoint's sampling defaults
        sampling = dict(temperature=1.0, top_p=1.0, top_k=50) if params.greedy else dict(
            temperature=sampled_temperature(params.temperature), top_p=params.top_p, top_k=params.top_k)
        config = GenerationConfig(
            max_new_tokens=max_tokens, do_sample=not params.greedy, eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id, **sampling,
        )
        dtype = self.llm.get_input_embeddings().weight.dtype
        try:
            with self._lock, torch.no_grad():
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                self.llm.generate(
                    inputs_embeds=embeds.to(dtype)[None], attention_mask=torch.ones(1, embeds.shape[0], dtype=torch.long),
                    generation_config=config, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Abort(stop)]),
                )
        finally:
            streamer.end()


class _QueueStreamer:
    """transformers streamer: hands each step's new token ids to `emit`, then None at the end."""

    def __init__(self, emit: Callable[[list[int] | None], object]):
        self.emit, self.prompt_seen, self.ended = emit, False, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt ids (empty with inputs_embeds)
            self.prompt_seen = True
            return
        self.emit(value.reshape(-1).tolist())

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.emit(None)


class _Abort:
    """Stopping criterion that ends generation when the request's abort event is set."""

    def __init__(self, stop: threading.Event):
        self.stop = stop

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.stop.is_set(), dtype=torch.bool, device=input_ids.device)


class _Detokenizer:
    """Incremental decoding with skip_special_tokens: each step decodes a short window (the last emitted step plus
    the new tokens) and emits what it adds, holding text that ends in a partial UTF-8 character."""

    def __init__(self, tokenizer):
        self.tok, self.ids, self.prefix, self.read = tokenizer, [], 0, 0

    def push(self, new: list[int]) -> str:
        self.ids += new
        return self._delta(final=False)

    def flush(self) -> str:
        return self._delta(final=True)

    def _delta(self, final: bool) -> str:
        done = self.tok.decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        text = self.tok.decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(text) <= len(done) or (text.endswith("\ufffd") and not final):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(done):]
