"""Stop strings over a streamed answer: for any chunking, the released text is the answer cut before the stop string
that completes first (vLLM's rule), nothing released is ever taken back, and the limits the edge checks."""

from __future__ import annotations

import random

import pytest

from alarm.errors import InvalidInput
from alarm.llm.backends import GenerationParams
from alarm.llm.limits import MAX_STOP_CHARS, MAX_STOP_STRINGS, stop_problem
from alarm.llm.stop import StopStrings, earliest

CASES = [  # (answer, stops, the answer as returned, the stop string that ended it)
    ("A dog barks. Then a cat.", ["."], "A dog barks", "."),
    ("A dog barks. Then a cat.", ["cat", "barks"], "A dog ", "barks"),
    ("abcd", ["abcd", "bc"], "a", "bc"),  # "bc" completes first, although "abcd" starts earlier
    ("abcd", ["bcd", "abcd"], "a", "bcd"),  # the same end: the first listed wins
    ("aaab", ["aab"], "a", "aab"),  # a held tail that is not the match's start
    ("no st0p here, only a partial sto", ["stop"], "no st0p here, only a partial sto", None),
    ("Yes.\n\nQ: next", ["\n\n", "Q:"], "Yes.", "\n\n"),
    ("ends exactly at the stop END", ["END"], "ends exactly at the stop ", "END"),
    ("", ["x"], "", None),
    ("no stops at all", [], "no stops at all", None),
]


def chunked(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 8))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("answer, stops, want, hit", CASES)
def test_any_chunking_releases_the_answer_cut_before_the_first_completed_stop(answer, stops, want, hit):
    rng = random.Random(0)
    for _ in range(50):
        s, released = StopStrings(stops), ""
        pieces = chunked(answer, rng)
        for piece in pieces:
            released += s.feed(piece)
            assert want.startswith(released), pieces  # nothing released is a stop or the start of the one that hits
        released += s.flush()
        assert (released, s.hit, s.sent) == (want, hit, len(want)), pieces


def test_after_counts_what_was_fed_past_the_stop_string():
    s = StopStrings(["dog"])
    assert s.feed("a hot") == "a hot" and s.feed(" do") == " " and s.after == 0
    assert s.feed("gs and cats") == "" and s.hit == "dog"
    assert s.after == len("s and cats") and s.feed("more") == "" and s.flush() == ""


def test_only_a_possible_stop_start_is_held_back():
    s = StopStrings(["STOP"])
    assert s.feed("ab S") == "ab " and s.held == "S"  # "S" may begin "STOP"
    assert s.feed("x") == "Sx" and s.held == ""  # "Sx" cannot


def test_earliest():
    assert earliest("xx ab", ["ab", "x"]) == (0, "x")
    assert earliest("nothing", ["a b"]) is None


@pytest.mark.parametrize("stop, message", [
    (("a",) * (MAX_STOP_STRINGS + 1), f"stop holds {MAX_STOP_STRINGS + 1} strings; send at most {MAX_STOP_STRINGS}"),
    (("ok", ""), f"stop[1] must be a string of 1 to {MAX_STOP_CHARS} characters, found 0 characters"),
    (("x" * (MAX_STOP_CHARS + 1),), f"stop[0] must be a string of 1 to {MAX_STOP_CHARS} characters, found 65"),
    (("ok", 3), "stop[1] must be a string of 1 to 64 characters, found a int"),
])
def test_stop_limits_name_the_field(stop, message):
    assert stop_problem(stop).startswith(message)
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        GenerationParams(stop=stop)


def test_accepted_stops():
    assert stop_problem(()) is None and stop_problem(("\n",) * MAX_STOP_STRINGS) is None
    assert stop_problem(("x" * MAX_STOP_CHARS,)) is None
    assert GenerationParams(stop=["a", "b"]).stop == ("a", "b")  # a list becomes a tuple (the params are frozen)
