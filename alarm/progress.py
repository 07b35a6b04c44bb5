"""One plain-text progress line with rate and ETA, for logs that are files, not terminals (no bars, no '\\r').

    p = Progress("train", total=400, done=120, unit="steps")     # done: where a resumed run starts
    p.line(140, "loss 1.23")   # 'train 140/400 (35%) 0.8 steps/s eta 5m25s loss 1.23'
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Counts against a total; the rate is measured from this object's start, so a resumed run's ETA counts
    only the work done since it resumed."""

    def __init__(self, what: str, total: int | None, done: int = 0, unit: str = "",
                 clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.start_done, self.clock = what, total, done, clock
        self.unit = f" {unit}" if unit else ""
        self.t0 = clock()

    def rate(self, done: int) -> float | None:
        elapsed = self.clock() - self.t0
        return (done - self.start_done) / elapsed if elapsed > 0 and done > self.start_done else None

    def eta_s(self, done: int) -> float | None:
        rate = self.rate(done)
        return None if rate is None or self.total is None else max(self.total - done, 0) / rate

    def line(self, done: int, extra: str = "") -> str:
        parts = [self.what, f"{done}/{self.total}" if self.total else str(done)]
        if self.total:
            parts.append(f"({100 * done / self.total:.0f}%)")
        rate, eta = self.rate(done), self.eta_s(done)
        parts.append(f"{rate:.3g}{self.unit}/s" if rate is not None else f"-{self.unit}/s")
        if self.total:
            parts.append(f"eta {duration(eta)}" if eta is not None else "eta -")
        return " ".join(parts + ([extra] if extra else []))


def duration(seconds: float) -> str:
    """45 -> '45s', 325 -> '5m25s', 7260 -> '2h01m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
