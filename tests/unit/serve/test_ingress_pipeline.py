"""AlarmIngress's shared pipeline (`events`, `final`, `models`), the one both protocols run, over fake deployment
handles: closing the event stream before its Final (a dropped HTTP connection, a cancelled gRPC stream) cancels the
LLM stream and the fusion calls, and frees the admission slot; a stream read to its end cancels nothing."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from alarm.config.serve import AuthConfig
from alarm.llm.backends import StreamEvent
from services.serve.auth import Tokens
from services.serve.core import Final
from services.serve.ingress import AlarmIngress
from services.serve.validate import RequestSpec
from tests.unit.serve import CFG, wav


class Call:
    """A DeploymentResponse: awaitable, cancellable."""

    def __init__(self, value=None):
        self.value, self.cancelled = value, False

    def __await__(self):
        async def get():
            return self.value
        return get().__await__()

    def cancel(self):
        self.cancelled = True


class Stream(Call):
    """A streaming DeploymentResponseGenerator."""

    def __init__(self, events):
        super().__init__()
        self.events = iter(events)

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return next(self.events)
        except StopIteration:
            raise StopAsyncIteration from None


class Handle:
    """`handle.options(...).method.remote(...)` -> what `make(method)` returns; records every call."""

    def __init__(self, make):
        self.make, self.calls = make, []

    def options(self, **_):
        return self

    def __getattr__(self, method):
        outer = self

        class Method:
            def remote(self, *a, **k):
                outer.calls.append(c := outer.make(method))
                return c
        return Method()


class NoWait:
    @asynccontextmanager
    async def guard(self, deployments, wait_s):
        yield

    async def table(self):
        return {"llm": 1}


class Sink:
    """A metric that records what it was given (the real ones need a Ray worker)."""

    def __init__(self):
        self.seen = []

    def set(self, value, tags=None):
        self.seen.append(value)

    inc = observe = set


def ingress(events):
    ing = object.__new__(AlarmIngress.func_or_class)
    ing.metrics = {n: Sink() for n in ("alarm_requests", "alarm_request_latency_ms", "alarm_requests_in_flight",
                                       "alarm_audio_seconds")}
    ing.cfg, ing.tokens, ing.readiness, ing._catalog, ing._inflight = CFG, Tokens(AuthConfig()), NoWait(), None, 0
    ing.layout, ing.engine = CFG.deployments.layout, None
    catalog = {a: tuple(CFG.model.encoders) for a in CFG.adapters}
    ing.encoders = {e: Handle(lambda m: Call(("states", 1.0))) for e in CFG.model.encoders}
    ing.fusion = Handle(lambda m: Call(catalog) if m == "catalog" else Call("block"))
    ing.llm = Handle(lambda m: Stream(events) if m == "stream" else Call(events[-1]))
    return ing


EVENTS = [StreamEvent("reasoning", "a"), StreamEvent("reasoning", "b"), StreamEvent("answer", "c"),
          Final(None, 25, 1.0, 1.0)]


def test_closing_the_stream_early_cancels_the_llm_and_fusion_calls():
    ing = ingress(EVENTS)

    async def go():
        events = ing.events(RequestSpec(prompt="What is it?", audio_bytes=wav()), "r1")
        parsed = await anext(events)
        first = await anext(events)
        assert ing._inflight == 1
        await events.aclose()  # what the HTTP body generator / GenerateStream do when the client is gone
        return parsed, first

    parsed, first = asyncio.run(go())
    assert parsed.llm.request_id == "r1" and first.text == "a"
    stream = ing.llm.calls[0]
    fused = [c for c in ing.fusion.calls if c.value == "block"]
    assert stream.cancelled and fused and all(c.cancelled for c in fused) and ing._inflight == 0
    assert ing.metrics["alarm_requests_in_flight"].seen[-1] == 0  # the freed slot is what the gauge shows


def test_a_stream_read_to_its_final_cancels_nothing_and_models_are_listed():
    ing = ingress(EVENTS)

    async def go():
        got = [ev async for ev in ing.events(RequestSpec(prompt="What is it?", audio_bytes=wav()), "r2")]
        parsed, final = await ing.final(RequestSpec(prompt="Hi"), "r3")
        return got, final, await ing.models()

    got, final, models = asyncio.run(go())
    assert isinstance(got[-1], Final) and final is EVENTS[-1] and ing._inflight == 0
    assert not any(c.cancelled for h in (ing.llm, ing.fusion) for c in h.calls)
    assert [m.id for m in models] == sorted(CFG.adapters)
    assert [m.id for m in models if m.is_default] == [CFG.default_adapter]
