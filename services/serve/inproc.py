"""`deployments.colocate: all`: the audio and LLM deployments' classes run inside the ingress replica, behind the
few handle calls the ingress makes, so its pipeline is one code path for every layout.

    llm = InProcess(await in_process(LLMServer, cfg))   # or InProcess(any object)
    final = await llm.generate.remote(req, *blocks)             # an asyncio Task: awaitable, cancel()
    events = llm.options(stream=True).stream.remote(req, *blocks)
    ev = await anext(events); events.cancel()                   # closes the generator: the engine aborts the request
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any


async def in_process(deployment, *args) -> Any:
    """An instance of a `@serve.deployment` class built here, its `async def __init__` awaited as Serve would."""
    cls = deployment.func_or_class
    obj = cls.__new__(cls)
    made = cls.__init__(obj, *args)
    if inspect.isawaitable(made):
        await made
    return obj


class InProcess:
    """A deployment handle's surface over a local object: `x.method.remote(...)` runs `method` in this event loop
    (coroutines as Tasks, plain methods at once), `x.options(stream=True)` for async generators."""

    def __init__(self, obj: Any, stream: bool = False):
        self._obj, self._stream = obj, stream  # private: every public name is the object's method

    def options(self, *, stream: bool = False, **_ignored) -> InProcess:
        """`stream` as Serve's; routing options (multiplexed_model_id, ...) have nothing to route here."""
        return InProcess(self._obj, stream)

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(getattr(self._obj, name), self._stream)


class _Method:
    def __init__(self, fn, stream: bool):
        self.fn, self.stream = fn, stream

    def remote(self, *args, **kwargs):
        if self.stream:
            return _Stream(self.fn(*args, **kwargs))
        out = self.fn(*args, **kwargs)
        if inspect.isawaitable(out):
            return asyncio.ensure_future(out)
        done = asyncio.get_running_loop().create_future()
        done.set_result(out)
        return done


class _Stream:
    """An async generator as a streaming DeploymentResponseGenerator: iterate it, or `cancel()` it (closing it runs
    the generator's cleanup, e.g. the LLM stage's abort)."""

    def __init__(self, gen):
        self.gen = gen
        self._closing: asyncio.Task | None = None

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self.gen.__anext__()

    def cancel(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.gen.aclose())
            # closing a generator another task is still inside fails; that task's own cancel closes it
            self._closing.add_done_callback(lambda t: t.cancelled() or t.exception())
