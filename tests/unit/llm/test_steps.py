"""Engine calls as steps: the batched (lockstep) and asynchronous (drive) runners give the same results."""

from __future__ import annotations

import asyncio

import pytest

from alarm.llm.steps import drive, lockstep, relay


def chain(name: str, n: int):
    """An item that makes n calls, each prompt built from the previous answer."""
    text = name
    for i in range(n):
        text = yield f"{text}/{i}"
    return text


def upper(calls: list[str]) -> list[str]:
    return [c.upper() for c in calls]


def test_lockstep_runs_round_by_round_and_keeps_the_order():
    seen = []

    def call(calls):
        seen.append(list(calls))
        return upper(calls)

    out = lockstep([chain("a", 2), chain("b", 0), chain("c", 1)], call)
    assert out == ["A/0/1", "b", "C/0"]
    assert seen == [["a/0", "c/0"], ["A/0/1"]]  # round 1: every first call; round 2: only a is left


def test_drive_gives_what_lockstep_gives():
    async def call(q):
        await asyncio.sleep(0)
        return q.upper()

    async def run():
        return await asyncio.gather(*(drive(chain(n, k), call) for n, k in [("a", 2), ("b", 0), ("c", 1)]))

    assert asyncio.run(run()) == lockstep([chain("a", 2), chain("b", 0), chain("c", 1)], upper)


def test_relay_wraps_each_call_and_returns_the_result():
    def outer():
        got = yield from relay(chain("x", 2), lambda q: ("tag", q))
        return f"done:{got}"

    assert lockstep([outer()], lambda calls: [q.upper() for _, q in calls]) == ["done:X/0/1"]


def test_a_short_batched_answer_and_a_failing_call_raise():
    with pytest.raises(ValueError, match="exactly one per call"):
        lockstep([chain("a", 1)], lambda calls: [])

    async def boom(q):
        raise RuntimeError("engine died")

    with pytest.raises(RuntimeError, match="engine died"):
        asyncio.run(drive(chain("a", 1), boom))
