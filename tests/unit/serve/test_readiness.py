"""The readiness table without Ray: what the health check answers, how fresh it is, and how a request that needs a
deployment without a running replica waits a bounded time and fails with Unavailable."""

from __future__ import annotations

import asyncio

import pytest

from alarm.errors import Unavailable
from services.serve.readiness import Readiness

REQUIRED = ["ingress", "encoder-whisper", "fusion", "llm"]


class FakeServe:
    """The controller's running-replica table, changed by the test; counts how often it is read."""

    def __init__(self, **running: int):
        self.running: dict[str, int] | None = {d: 1 for d in REQUIRED} | running
        self.reads = 0

    async def fetch(self):
        self.reads += 1
        await asyncio.sleep(0.01)
        return None if self.running is None else dict(self.running)


def run(coro):
    return asyncio.run(coro)


def test_ready_only_when_every_required_deployment_runs():
    serve = FakeServe()
    table = Readiness(REQUIRED, serve.fetch, max_age_s=0)

    async def go():
        first = await table.ready()
        serve.running["llm"] = 0
        second = await table.ready()
        serve.running = None  # application gone, or the controller unreachable
        return first, second, await table.ready()

    assert run(go()) == (True, False, False)


def test_a_deployment_that_may_scale_to_zero_is_not_required():
    serve = FakeServe(llm=0)
    assert run(Readiness(["ingress", "fusion"], serve.fetch, max_age_s=0).ready())


def test_concurrent_callers_share_one_read_and_answers_are_never_older_than_max_age():
    serve = FakeServe()
    table = Readiness(REQUIRED, serve.fetch, max_age_s=0.2)

    async def go():
        await asyncio.gather(*(table.ready() for _ in range(50)))
        reads = serve.reads
        serve.running["fusion"] = 0
        await asyncio.sleep(0.25)
        return reads, await table.ready()

    assert run(go()) == (1, False)


def test_a_request_for_a_deployment_without_replicas_fails_after_the_wait():
    serve = FakeServe(llm=0)
    table = Readiness(REQUIRED, serve.fetch, max_age_s=0, poll_s=0.02)

    async def go():
        async with table.guard(["fusion", "llm"], wait_s=0.1):
            await asyncio.sleep(30)  # what Serve's router does: wait for a replica

    with pytest.raises(Unavailable, match="llm has no running replica"):
        asyncio.run(asyncio.wait_for(go(), 5))


def test_a_replica_back_within_the_wait_lets_the_request_through():
    serve = FakeServe(llm=0)
    table = Readiness(REQUIRED, serve.fetch, max_age_s=0, poll_s=0.02)

    async def go():
        async def restart():
            await asyncio.sleep(0.1)
            serve.running["llm"] = 1

        asyncio.ensure_future(restart())
        async with table.guard(["llm"], wait_s=0.5):
            await asyncio.sleep(0.8)  # the body outlives the wait: only the replica's absence counts
        return "done"

    assert run(go()) == "done"


def test_guard_leaves_the_callers_own_cancellation_alone():
    serve = FakeServe()
    table = Readiness(REQUIRED, serve.fetch, max_age_s=0, poll_s=0.02)

    async def go():
        async def body():
            async with table.guard(["llm"], wait_s=0.05):
                await asyncio.sleep(30)

        task = asyncio.ensure_future(body())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return "cancelled"

    assert run(go()) == "cancelled"
