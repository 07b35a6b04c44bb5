"""A second leak judge for the toy world: phrasings that were never used to write the teacher's rephrase data.

    held_out_leaks("The metadata lists 3 beeps.")   # ['metadata', 'lists']
    leaks("I count 3 beeps.")                        # {} (neither judge flags it)

`alarm.corpus.leak.find_leaks` is the corpus pipeline's lexical detector, and the toy teacher's heard wording
(`alarm.toy.phrases`) was written to pass it. A low leak rate under that detector alone could mean only that the
teacher avoids the exact phrases it knows; this set is broader (word stems about text, records and reading) and
was written separately from the teacher's phrases, so a target or a trained model's reasoning that talks about a
text surrogate in other words is caught here.
"""

from __future__ import annotations

import re

from alarm.corpus.leak import find_leaks
from alarm.llm.thinking import FORCING_SUFFIX

FORCING_SENTENCE = FORCING_SUFFIX.split("\n")[0]  # as it stands in a reply's reasoning, without </think>

HELD_OUT = (
    r"descri\w*", r"meta[- ]?data", r"caption\w*", r"label\w*", r"annotat\w*", r"tag(?:s|ged)?", r"transcri\w*",
    r"texts?", r"written", r"writes?", r"document\w*", r"fields?", r"entr(?:y|ies)", r"data", r"info(?:rmation)?",
    r"list(?:s|ed)?", r"given", r"gives?", r"provid\w*", r"mention\w*", r"stat(?:es|ed)", r"specif\w*",
    r"according to", r"says?", r"said", r"reads?", r"notes? (?:that|as)", r"records? (?:says|shows|lists)",
    r"prompt", r"input", r"<\w+_audio>",
)
_HELD_OUT = re.compile(r"(?<![\w<])(?:" + "|".join(HELD_OUT) + r")(?![\w>])", re.IGNORECASE)


def held_out_leaks(text: str) -> list[str]:
    """The held-out phrases found in `text` (lower-cased, unique, in order of appearance)."""
    out: list[str] = []
    for m in _HELD_OUT.finditer(text):
        word = m.group(0).lower()
        if word not in out:
            out.append(word)
    return out


def leaks(text: str) -> dict[str, list[str]]:
    """Both judges' findings, by judge ('lexical': the corpus detector, 'held_out': this one); empty if clean."""
    found = {"lexical": find_leaks(text), "held_out": held_out_leaks(text)}
    return {k: v for k, v in found.items() if v}


def own_reasoning(text: str) -> str:
    """A reply's reasoning without the forcing sentence: the server wrote that one when the thinking budget ran out
    ("... I have to give the solution ..."), so it says nothing about what the model heard or read."""
    return text.replace(FORCING_SENTENCE, "")


def leak_rates(texts: list[str]) -> dict[str, float]:
    """The share of `texts` each judge flags, and either ('any')."""
    n = max(len(texts), 1)
    found = [leaks(t) for t in texts]
    return {"lexical": sum("lexical" in f for f in found) / n, "held_out": sum("held_out" in f for f in found) / n,
            "any": sum(bool(f) for f in found) / n}
