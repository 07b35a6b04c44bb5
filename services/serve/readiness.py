"""Readiness: which deployments of the application have a running replica, read from Serve's controller and shared
by everything that asks, the health check (ready = every deployment that must keep a replica has one) and the
request path (a request needing a deployment with none waits at most `limits.replica_wait_s`, then fails with
UNAVAILABLE instead of queueing until the replica is rebuilt).

    table = Readiness(app="alarm", required=["ingress", "encoder-whisper", "fusion", "llm"])
    await table.ready()                                   # the readiness probe's answer
    async with table.guard(["encoder-whisper", "fusion", "llm"], wait_s=3.0):
        ...                                               # Unavailable if one of them has no replica for 3 s

The table is at most MAX_AGE_S old (one controller call refreshes it for every concurrent caller). Serve's
controller notices a dead replica at its next health check, `deployments.*.health_check_period_s` (1 s by default)
after the death, so readiness turns NOT_SERVING within about that period plus MAX_AGE_S.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

from alarm.errors import Unavailable

log = logging.getLogger(__name__)

MAX_AGE_S = 0.5  # how old a table may be when it answers (no longer cache of a positive answer)
POLL_S = 0.25  # how often a waiting request looks again

Fetch = Callable[[], Awaitable[dict[str, int] | None]]


async def serve_running_replicas(app: str) -> dict[str, int] | None:
    """deployment -> running replicas of application `app`, from Serve's controller; None when the application is
    missing, being deleted or failed, or the controller cannot be reached."""
    from ray import serve

    try:
        status = (await asyncio.to_thread(serve.status)).applications.get(app)
    except Exception:
        log.warning("readiness: cannot reach the Serve controller", exc_info=True)
        return None
    if status is None or status.status in ("DELETING", "DEPLOY_FAILED") or not status.deployments:
        return None
    return {name: d.replica_states.get("RUNNING", 0) for name, d in status.deployments.items()}


class Readiness:
    """The running-replica table of one application.

    Args:
        required: Deployments that must keep a running replica (those with min_replicas >= 1); one that may scale to
            zero is neither needed for readiness nor waited on (a request is what wakes it up).
        fetch: Reads the table (`serve_running_replicas` in a replica; a fake in unit tests).
    """

    def __init__(self, required: Iterable[str], fetch: Fetch, *, max_age_s: float = MAX_AGE_S,
                 poll_s: float = POLL_S):
        self.required = tuple(required)
        self.fetch, self.max_age_s, self.poll_s = fetch, max_age_s, poll_s
        self._table: dict[str, int] | None = None
        self._at = -1e9
        self._refresh: asyncio.Task | None = None

    async def table(self) -> dict[str, int] | None:
        """deployment -> running replicas, at most max_age_s old (None: the application is not there)."""
        if time.monotonic() - self._at > self.max_age_s:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.ensure_future(self._read())
            await asyncio.shield(self._refresh)
        return self._table

    async def _read(self) -> None:
        self._table = await self.fetch()
        self._at = time.monotonic()

    def missing(self, table: dict[str, int] | None, deployments: Iterable[str]) -> list[str]:
        """Deployments among `deployments` that must keep a replica and have none running."""
        return [d for d in deployments if d in self.required and (table is None or table.get(d, 0) <= 0)]

    async def ready(self) -> bool:
        table = await self.table()
        return table is not None and not self.missing(table, self.required)

    async def wait_lost(self, deployments: Iterable[str], wait_s: float) -> list[str]:
        """Returns the deployments without a running replica once some have had none for `wait_s`; never returns
        while each keeps one (cancel it when the work it guards is done)."""
        deployments, since = tuple(deployments), None
        while True:
            gone = self.missing(await self.table(), deployments)
            if not gone:
                since = None
            elif since is None:
                since = time.monotonic()
            if gone and time.monotonic() - since >= wait_s:
                return gone
            await asyncio.sleep(self.poll_s)

    @asynccontextmanager
    async def guard(self, deployments: Iterable[str], wait_s: float):
        """Runs the body unless a needed deployment has no running replica for `wait_s` (before or while the body
        runs): then the body is cancelled and Unavailable raised. Without it a request for a deployment whose only
        replica died would wait in Serve's router until a new replica is built (tens of seconds for an LLM)."""
        task, lost = asyncio.current_task(), []

        async def watch() -> None:
            lost.extend(await self.wait_lost(deployments, wait_s))
            task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            yield
        except asyncio.CancelledError:
            if not lost:
                raise
            task.uncancel()
            raise Unavailable(f"{', '.join(lost)} has no running replica (restarting)") from None
        finally:
            watcher.cancel()
