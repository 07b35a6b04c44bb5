"""Engine calls as steps: one item's generation logic written once, run batched or asynchronously.

    def steps(prompt):                        # a generator: yields each call it needs, receives its result
        first = yield (prompt, 64)
        return (yield (prompt + first.text, 64)) if first.finish_reason == "length" else first

    outs = lockstep([steps(p) for p in prompts], call_batch)   # round by round, one batched call per round
    out = await drive(steps(prompt), call_one)                 # one item, each call awaited as soon as it is due

The logic never sees the engine (a "sans-IO" generator), so the batched path (`vllm.LLM`, tests) and the
asynchronous path (vLLM's AsyncLLM, many items in flight) run the same code and give the same results whenever
the engine answers a call the same way in both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TypeVar

Q = TypeVar("Q")  # a call
A = TypeVar("A")  # its result
R = TypeVar("R")  # the item's result
Q2 = TypeVar("Q2")

Steps = Generator[Q, A, R]


def lockstep(items: list[Steps[Q, A, R]], call: Callable[[list[Q]], list[A]]) -> list[R]:
    """Run every item round by round: each round, one `call` with the calls that all unfinished items need next.

    Args:
        items: One step generator per item.
        call: Batched engine call: one result per call, in order.

    Returns:
        Each item's result, in the order of `items`.

    Raises:
        ValueError: `call` returned the wrong number of results.
    """
    results: list[R | None] = [None] * len(items)
    due: dict[int, Q] = {}
    for i, item in enumerate(items):
        _advance(item, None, i, due, results, first=True)
    while due:
        idx = list(due)
        calls = [due.pop(i) for i in idx]
        outs = call(calls)
        if len(outs) != len(calls):
            raise ValueError(f"a batched call returned {len(outs)} results for {len(calls)} calls; it must "
                             "return exactly one per call, in order")
        for i, out in zip(idx, outs, strict=True):
            _advance(items[i], out, i, due, results)
    return results  # type: ignore[return-value]


def _advance(item: Steps, answer, i: int, due: dict, results: list, first: bool = False) -> None:
    try:
        due[i] = next(item) if first else item.send(answer)
    except StopIteration as stop:
        results[i] = stop.value


async def drive(item: Steps[Q, A, R], call: Callable[[Q], Awaitable[A]]) -> R:
    """Run one item to its result, awaiting each call it yields. An exception from `call` propagates."""
    try:
        q = next(item)
        while True:
            q = item.send(await call(q))
    except StopIteration as stop:
        return stop.value


def relay(item: Steps[Q, A, R], wrap: Callable[[Q], Q2]) -> Steps[Q2, A, R]:
    """`item` with each yielded call passed through `wrap` (e.g. tagged with its stage): `yield from relay(...)`."""
    try:
        q = next(item)
        while True:
            q = item.send((yield wrap(q)))
    except StopIteration as stop:
        return stop.value
