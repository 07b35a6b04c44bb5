"""What the toy teacher says: a reasoning that cites the attribute from the description, and its heard version.

    cited, heard = reasoning(item)
    # "The description gives a treble register, so the pitch is high. So the answer is high."
    # "I hear a treble register, so the pitch is high. So the answer is high."
    # yes/no: "I hear a treble register, so the pitch is high. Is the pitch low? If it is low, yes; if it is
    #          high, no. It is high, so the answer is no."

A reasoning is an opening (`OPENINGS`: what it read, or what it heard), the attribute the question needs (`BODIES`,
per question type) and a conclusion that states the chosen option's text, which the answer then copies; a yes/no
conclusion first restates the question and what each answer would mean, then the value found (`conclusion`).
The heard version changes only the opening, the light edit self-rephrasing makes (method: change a few words,
keep the rest). Which opening a question gets follows its wording (`ToyItem.wording`), so greedy decoding still
writes varied reasoning.
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
    """` So the answer is X.`; for yes/no, the question restated, what each answer would mean, the value found
    and the answer: ` Is the pitch low? If it is low, yes; if it is high, no. It is high, so the answer is no.`

    A yes/no answer is the XOR of two binary facts (the option the question asks about, the one the clip has),
    which gradient descent finds late, and a 4-layer LM within its training budget not on every seed: written
    as `So it is not low, ...` (world seed 0), `It is high: no.` or `It asks for low, and it is high: they
    differ, ...` (seed 2), 15-16% of the teacher's held-out yes/no answers were wrong, while other seeds got
    them all right. Here no step compares two words: the question is copied, each option is written beside the
    answer it gives, and the value found looks its option up by matching words (what attention does) and takes
    the answer beside it."""
    if not item.yes_no:
        return f" So the answer is {item.answer}."
    f = item.facts
    return (f" {item.question} If it is {f['asked']}, yes; if it is {f['other']}, no."
            f" It is {f[HELD[item.qtype]]}, so the answer is {item.answer}.")


def reasoning(item: ToyItem) -> tuple[str, str]:
    """(the reasoning from the description, the same reasoning as heard), each ending with the answer."""
    cited, heard = OPENINGS[item.wording % len(OPENINGS)]
    body = BODIES[item.qtype].format(**facts(item))
    end = conclusion(item)
    return f"{cited} {body}.{end}", f"{heard} {body}.{end}"
