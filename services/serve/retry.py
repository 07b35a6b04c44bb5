"""Client retries of UNAVAILABLE (a replica or node lost, a proxy not ready): exponential backoff with full jitter,
bounded by the call's own deadline, never for a stream that has already yielded output (AlarmClient(retries=N))."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc

T = TypeVar("T")

# Only UNAVAILABLE: the server promises it for what a new attempt can fix (a replica or its node lost, a proxy not
# yet ready). Not RESOURCE_EXHAUSTED: gRPC itself uses it for a message over the size limit, which no retry fixes,
# and retrying the server's load shedding at once only adds to the load it shed.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True)
class Backoff:
    """How a client retries: up to `retries` more attempts, the n-th after a pause drawn uniformly from
    [0, min(max_s, base_s * 2**n)] (full jitter, so that the clients a node loss fails together do not return
    together), and never past the call's deadline."""

    retries: int = 0
    base_s: float = 0.2
    max_s: float = 5.0

    def pause(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        return rng() * min(self.max_s, self.base_s * 2**attempt)

    def next_pause(self, error: grpc.RpcError, attempt: int, deadline: float) -> float | None:
        """The pause before attempt `attempt + 1`, or None to give up (not retryable, out of attempts, or the
        pause would leave no time before the deadline)."""
        if attempt >= self.retries or error.code() not in RETRYABLE:
            return None
        pause = self.pause(attempt)
        return pause if time.monotonic() + pause < deadline else None


def call_with_retries(call: Callable[[float], T], timeout_s: float, backoff: Backoff) -> T:
    """`call(seconds left)` until it succeeds or `backoff` gives up (the last error is raised)."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        try:
            return call(deadline - time.monotonic())
        except grpc.RpcError as e:
            if (pause := backoff.next_pause(e, attempt, deadline)) is None:
                raise
            time.sleep(pause)
            if time.monotonic() >= deadline:  # the pause overran (a busy machine): no time left to try
                raise
        attempt += 1


class RetryingStream(Iterator):
    """A server stream that starts again (a new call) on UNAVAILABLE as long as it has yielded nothing: after the
    first message a retry would repeat output the caller already has, so the error is raised. Like the gRPC call
    it wraps, `.cancel()` stops it, and `code()`, `details()`, `trailing_metadata()` describe the current call."""

    def __init__(self, start: Callable[[float], grpc.Call], timeout_s: float, backoff: Backoff):
        self._start, self._backoff = start, backoff
        self._deadline = time.monotonic() + timeout_s
        self._attempt, self._yielded, self._cancelled = 0, False, False
        self._call = start(timeout_s)

    def __next__(self):
        while True:
            try:
                msg = next(self._call)
            except grpc.RpcError as e:
                if self._yielded or self._cancelled:
                    raise
                if (pause := self._backoff.next_pause(e, self._attempt, self._deadline)) is None:
                    raise
                time.sleep(pause)
                if time.monotonic() >= self._deadline:
                    raise
                self._attempt += 1
                self._call = self._start(self._deadline - time.monotonic())
                continue
            self._yielded = True
            return msg

    def cancel(self) -> bool:
        self._cancelled = True
        return self._call.cancel()

    def __getattr__(self, name: str):  # code(), details(), trailing_metadata(), is_active(), ...
        return getattr(self._call, name)
