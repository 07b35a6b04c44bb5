"""Errors raised inside Ray (actors, tasks, Train workers) come back wrapped, sometimes only as text; this digs
our own error out so a command can print a clear message instead of a stack trace."""

from __future__ import annotations

import re

from alarm.errors import AlarmError


def alarm_error_in(error: BaseException) -> str | None:
    """The message of one of our errors raised inside Ray (wrapped by actors, tasks and Train, or only text)."""
    for e in error_chain(error):
        if isinstance(e, AlarmError):
            return _say(type(e).__name__, str(e))
        m = re.search(r"(InvalidInput|CheckpointError|CheckpointMismatch|ConfigError): ([^\n]+)", str(e))
        if m:
            return _say(m.group(1), m.group(2).strip())
    return None


def error_chain(error: BaseException) -> list[BaseException]:
    """`error` and everything inside it, breadth first: Train's worker failures, the originals Ray wraps
    (`.cause`), causes and contexts."""
    queue, seen, out = [error], set(), []
    while queue and len(out) < 50:
        e = queue.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        failures = getattr(e, "worker_failures", None) or {}
        queue += list(failures.values()) if isinstance(failures, dict) else list(failures)
        queue += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return out


def _say(kind: str, message: str) -> str:
    """Bad input speaks for itself; other classes keep their name (a checkpoint error is not bad input)."""
    return message if kind == "InvalidInput" else f"{kind}: {message}"
