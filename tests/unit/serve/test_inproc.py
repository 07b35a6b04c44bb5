"""`colocate: all` (inproc.py): the stages run in the ingress's replica behind the handle calls it makes. A call is
awaitable and cancellable, a stream closed early runs the stage's cleanup (the LLM's abort), and the ingress's
pipeline over such stages gives the same events and frees its slot as over deployment handles."""

from __future__ import annotations

import asyncio

import pytest

from alarm.llm.backends import StreamEvent
from services.serve.core import Final
from services.serve.inproc import InProcess, in_process
from services.serve.validate import RequestSpec
from tests.unit.serve import CFG, wav
from tests.unit.serve.test_ingress_pipeline import EVENTS, ingress


class Stages:
    """What AudioServer and LLMServer offer the ingress, with a record of what ran and what was closed."""

    def __init__(self, events):
        self.events, self.log = events, []

    def catalog(self):
        return {a: tuple(CFG.model.encoders) for a in CFG.adapters}

    async def blocks(self, wave, adapters):
        self.log.append(("blocks", tuple(adapters)))
        return ["block"] * len(adapters)

    async def generate(self, req, *blocks):
        self.log.append(("generate", sum(len(b) if isinstance(b, list) else 1 for b in blocks)))
        await asyncio.sleep(0)
        return self.events[-1]

    async def stream(self, req, *blocks):
        try:
            for ev in self.events:
                yield ev
                await asyncio.sleep(0)
        finally:
            self.log.append(("closed", req.request_id))


def test_calls_are_tasks_or_done_futures_and_routing_options_are_ignored():
    async def go():
        s = InProcess(Stages(EVENTS))
        catalog = await s.options(multiplexed_model_id="tiny-b").catalog.remote()
        call = s.generate.remote(None, "b")
        assert isinstance(call, asyncio.Task)
        slow = s.generate.remote(None)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        return catalog, await call, s._obj.log

    catalog, final, log = asyncio.run(go())
    assert set(catalog) == set(CFG.adapters) and final is EVENTS[-1] and ("generate", 1) in log


def test_private_names_are_not_forwarded():
    with pytest.raises(AttributeError):
        InProcess(Stages(EVENTS))._secret  # noqa: B018


def test_a_stream_cancelled_between_events_is_closed():
    class Req:
        request_id = "r9"

    async def go():
        s = InProcess(Stages(EVENTS))
        events = s.options(stream=True).stream.remote(Req())
        first = await anext(events)
        events.cancel()
        events.cancel()  # twice: one close
        await asyncio.sleep(0.01)
        return first, s._obj.log

    first, log = asyncio.run(go())
    assert first.text == "a" and log == [("closed", "r9")]


def test_in_process_awaits_an_async_constructor():
    class Deployment:
        class func_or_class:  # noqa: N801  (what @serve.deployment keeps)
            async def __init__(self, x):
                await asyncio.sleep(0)
                self.x = x

    assert asyncio.run(in_process(Deployment, 3)).x == 3


def one_layout_ingress(events):
    ing = ingress(events)
    ing.layout, ing.encoders = "one", {}
    ing.stages = Stages(events)
    ing.fusion = ing.llm = InProcess(ing.stages)
    ing.engine = None  # only check_health/__del__ use it
    return ing


def test_the_ingress_over_in_process_stages_streams_and_closes_the_llm_stream_early():
    ing = one_layout_ingress(EVENTS)

    async def go():
        events = ing.events(RequestSpec(prompt="What is it?", audio_bytes=wav()), "r1")
        await anext(events)
        first = await anext(events)
        await events.aclose()  # the client left
        await asyncio.sleep(0.01)
        got = [ev async for ev in ing.events(RequestSpec(prompt="What?", audio_bytes=wav()), "r2")]
        _, final = await ing.final(RequestSpec(prompt="Hi", audio_bytes=wav(), ensemble_adapter_ids=("tiny", "tiny-b")), "r3")
        return first, got, final

    first, got, final = asyncio.run(go())
    log = ing.stages.log
    assert first.text == "a" and ("closed", "r1") in log and ing._inflight == 0
    assert [e.text for e in got if isinstance(e, StreamEvent)] == ["a", "b", "c"] and isinstance(got[-1], Final)
    assert final is EVENTS[-1] and ("blocks", ("tiny", "tiny-b")) in log and ("generate", 2) in log


def test_the_ingress_hosting_the_engine_fails_its_health_check_when_the_engine_died_and_closes_it_at_shutdown():
    class Core:
        closed = False

        async def aclose(self):
            Core.closed = True

    class Engine:
        core = Core()

        def check_health(self):
            raise RuntimeError("the LLM engine died; this replica must restart")

    ing = one_layout_ingress(EVENTS)
    ing.check_health()  # no engine here: nothing to check
    ing.engine = Engine()
    with pytest.raises(RuntimeError, match="engine died"):
        ing.check_health()
    asyncio.run(ing.__del__())  # what Serve awaits at shutdown
    assert Core.closed and ing.engine is None and ing.__del__() is None
