"""What the toy teacher says: a reasoning that cites the attribute from the description, and its heard version.

    cited, heard = reasoning(item)
    # "The description gives a treble register, so the pitch is high. So the answer is high."
    # "I hear a treble register, so the pitch is high. So the answer is high."
    # yes/no: "I hear a treble register, so the pitch is high. Is the pitch low? It is high, so the answer is no."

A reasoning is an opening (`OPENINGS`: what it read, or what it heard), the attribute the question needs (`BODIES`,
per question type) and a conclusion that states the chosen option's text, which the answer then copies; a yes/no
conclusion restates the question and the value heard, then answers. The heard version changes only the
opening, the light edit self-rephrasing makes (method: change a few words, keep the rest). Which opening a question gets follows its
wording (`ToyItem.wording`), so greedy decoding still writes varied reasoning.
"""

from __future__ import annotations

from alarm.toy.world import QTYPES, ToyItem

# (cited, heard): the openings, each followed by a body (a noun phrase)
OPENINGS = (
    ("The description gives", "I hear"),
    ("The metadata lists", "I can hear"),
    ("The caption names", "What I hear is"),
)
BODIES = {  # str.format templates over the item's facts
    "kind": "{name}",
    "pitch": "a {register} register, so the pitch is {level}",
    "loudness": "{name} at a {word} level, so the sound is {level}",
    "duration": "{name} of {span_a} duration, so the clip is {length}",
    "direction": "{dir_a} sweep, so the pitch is {way}",
    "rate": "a {pace} pace, so it is {speed}",
    "count": "a {pattern} pattern, {answer}",
    "voices": "a {opener} opening voice, so {first} starts",
}
assert tuple(BODIES) == QTYPES
HELD = {"pitch": "level", "loudness": "level", "duration": "length", "direction": "way", "rate": "speed",
        "voices": "first"}  # the fact a yes/no question compares with what it asks


def facts(item: ToyItem) -> dict[str, str]:
    """The item's facts plus the derived wordings the templates use (an article, the answer)."""
    f = dict(item.facts)
    for key in ("dir", "span"):
        if key in f:
            f[f"{key}_a"] = ("an " if f[key][0] in "aeiou" else "a ") + f[key]
    f["answer"] = item.answer
    return f


def conclusion(item: ToyItem) -> str:
    """` So the answer is X.`; for yes/no, the question restated and the value heard, then the answer:
    ` Is the tone high? It is low, so the answer is no.`

    The two words a yes/no answer compares come right before it (the one copied from the question, the one the
    reasoning found), so a small LM decides next to them. Written as `So it is not low, and the answer is no.`, the
    `not` had to be chosen before either word: the tiny teacher chose it wrongly on 15 of 256 held-out questions,
    all yes/no; in this form its reasoning was right on all 256 (its reply still named the other option on 13)."""
    if not item.yes_no:
        return f" So the answer is {item.answer}."
    return f" {item.question} It is {item.facts[HELD[item.qtype]]}, so the answer is {item.answer}."


def reasoning(item: ToyItem) -> tuple[str, str]:
    """(the reasoning from the description, the same reasoning as heard), each ending with the answer."""
    cited, heard = OPENINGS[item.wording % len(OPENINGS)]
    body = BODIES[item.qtype].format(**facts(item))
    end = conclusion(item)
    return f"{cited} {body}.{end}", f"{heard} {body}.{end}"
