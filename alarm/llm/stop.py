"""Stop strings (OpenAI's `stop`) over the answer as it streams: released text never holds a stop string, nor the
beginning of one that then completes, and concatenated releases equal the answer cut before the stop string.

    stops = StopStrings(["\\n\\n", "Q:"])
    stops.feed("Yes, a dog.\\n")     # -> "Yes, a dog."   ("\\n" is held: it may begin "\\n\\n")
    stops.feed("\\nQ: next")         # -> ""              (stops.hit == "\\n\\n"; nothing more is released)

The rules are vLLM's (`vllm.v1.engine.detokenizer.check_stop_strings`): the stop string that completes first wins
(ties: list order) and is excluded with everything after it. Unlike vLLM, which holds back a fixed
`max(len(stop)) - 1` characters, only a tail that is still the beginning of a stop string is held.
"""

from __future__ import annotations

from collections.abc import Sequence


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker` (a marker split across deltas)."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def earliest(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """(start, stop string) of the stop string that ends first in `text` (ties: the first listed), or None."""
    best: tuple[int, int, str] | None = None
    for s in stops:
        at = text.find(s)
        if at >= 0 and (best is None or at + len(s) < best[0]):
            best = (at + len(s), at, s)
    return None if best is None else (best[1], best[2])


class StopStrings:
    """Feed answer deltas, get what can be released; `hit` is the stop string once one completed.

    Attributes:
        hit: The stop string that ended the answer, or None.
        sent: Characters released so far (with a hit: the length of the answer before the stop string).
        after: With a hit, how many characters were fed past the end of the stop string (generated after it).
    """

    def __init__(self, stops: Sequence[str] = ()):
        self.stops = tuple(stops)
        self.held = ""  # the tail that may still become a stop string
        self.sent = self.fed = 0
        self.hit: str | None = None

    @property
    def after(self) -> int:
        return 0 if self.hit is None else self.fed - self.sent - len(self.hit)

    def feed(self, text: str) -> str:
        if self.hit is not None:
            return ""
        self.fed += len(text)
        buf = self.held + text
        if (match := earliest(buf, self.stops)) is not None:
            at, self.hit = match
            self.held = ""
            return self._release(buf[:at])
        keep = max((partial_suffix(buf, s) for s in self.stops), default=0)
        self.held = buf[len(buf) - keep:] if keep else ""
        return self._release(buf[:len(buf) - keep])

    def flush(self) -> str:
        """The answer ended without a stop string: the held tail was answer after all."""
        held, self.held = self.held, ""
        return "" if self.hit is not None else self._release(held)

    def _release(self, text: str) -> str:
        self.sent += len(text)
        return text
