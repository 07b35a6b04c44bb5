"""A bounded closed-loop load generator for the gRPC endpoint: a pool of clients of which the first `clients` each
send one request after another; every request ends OK or with a status code, and is recorded (bench/scale.py).

    with Load("127.0.0.1:9104", max_clients=6, max_requests=2000, max_s=900, retries=4) as load:
        load.clients = 3            # ramp: change it at any time
        load.rate(5), load.latency(0.95, 5), load.counts()
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

from services.serve.client import AlarmClient


@dataclass(frozen=True)
class Outcome:
    """One request: when it started and ended (on the load's clock), its status code name, and the retries its
    client was allowed (0 or the load's `retries`)."""

    start: float
    end: float
    code: str
    retries: int


def clip(i: int, seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A FLAC tone, a different pitch per request."""
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * (150 + 37 * (i % 20)) * t)).astype(np.float32), rate, format="FLAC")
    return buf.getvalue()


class Load:
    """`max_clients` threads, each with its own channel; thread k sends while k < `clients`, one request after
    another, until `max_requests` were sent or `max_s` passed since the start. Odd-numbered clients retry UNAVAILABLE `retries`
    times (AlarmClient(retries=N)), even ones never: two populations under the same faults, counted apart.

    Args:
        target: host:port of the gRPC proxy (127.0.0.1 only: this is a load test).
        timeout_s: each call's deadline.
        clock: seconds, for the outcomes' times (a drill's Timeline.now, to share its time axis).
        request: keyword arguments of every AlarmClient.generate call (max_tokens, ...).
    """

    def __init__(self, target: str, *, max_clients: int, max_requests: int, max_s: float, retries: int = 0,
                 timeout_s: float = 60.0, clock: Callable[[], float] = time.monotonic, **request):
        if not target.startswith("127.0.0.1:"):
            raise ValueError(f"target={target!r}: a load test sends to 127.0.0.1 only")
        self.clients, self.max_clients, self.retries = 0, max_clients, retries
        self.timeout_s, self.clock = timeout_s, clock
        self.request = {"max_thinking_tokens": 8, "max_tokens": 32, **request}
        self.outcomes: list[Outcome] = []
        self._starts: list[float] = []  # every request's start, in flight or done: the offered load
        self._sent, self._max_requests = 0, max_requests
        self._max_s, self._deadline = max_s, float("inf")  # from the start (__enter__)
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._audio = [clip(i) for i in range(8)]
        self._threads = [threading.Thread(target=self._run, args=(k, target), name=f"load-{k}", daemon=True)
                         for k in range(max_clients)]

    def __enter__(self) -> Load:
        self._deadline = time.monotonic() + self._max_s
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop sending; waits for the calls in flight (each ends by its deadline)."""
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 30)

    @property
    def sent(self) -> int:
        return self._sent

    def _next(self) -> int | None:
        """The next request's number, or None once the load is over its bounds."""
        with self._lock:
            if self._sent >= self._max_requests or time.monotonic() > self._deadline:
                self._stop.set()
                return None
            self._sent += 1
            return self._sent - 1

    def _run(self, k: int, target: str) -> None:
        retries = self.retries if k % 2 else 0
        with AlarmClient(target, timeout_s=self.timeout_s, retries=retries, backoff_s=0.5) as client:
            while not self._stop.is_set():
                if k >= self.clients:
                    self._stop.wait(0.1)
                    continue
                if (i := self._next()) is None:
                    return
                start = self.clock()
                with self._lock:
                    self._starts.append(start)
                try:
                    client.generate(self._audio[i % len(self._audio)], f"What do you hear? ({i})", **self.request)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                except Exception as e:  # counted, never lost: a client-side failure is a result too
                    code = f"CLIENT_{type(e).__name__}"
                with self._lock:
                    self.outcomes.append(Outcome(start, self.clock(), code, retries))

    def rate(self, window_s: float) -> float:
        """Requests sent per second over the last `window_s`."""
        since = self.clock() - window_s
        with self._lock:
            return round(sum(t >= since for t in self._starts) / window_s, 2)

    def latency(self, q: float, window_s: float) -> float | None:
        """The q-quantile of the seconds of the OK requests that ended in the last `window_s`."""
        since = self.clock() - window_s
        with self._lock:
            done = [o.end - o.start for o in self.outcomes if o.end >= since and o.code == "OK"]
        return round(float(np.quantile(done, q)), 3) if done else None

    def counts(self) -> dict[str, int]:
        """Requests by status so far, each population apart: `CODE` (no retries) and `CODE, retries=N`."""
        with self._lock:
            return dict(Counter(o.code + (f", retries={o.retries}" if o.retries else "") for o in self.outcomes))

    def errors(self) -> dict[str, int]:
        return {k: v for k, v in self.counts().items() if not k.startswith("OK")}
