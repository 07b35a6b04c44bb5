"""Leak checks: does a response reveal that the model read a text surrogate instead of hearing the audio?

    find_leaks("The description says a dog barks.")    # ['the description']
    find_leaks("I hear a dog barking in the distance.")  # []

`find_leaks` is a cheap lexical detector over whole phrases (a bare word such as 'label' or 'text' is too common
in honest answers to flag). The optional LLM judge gets our own rules and examples and ends with
`ANSWER: YES|NO`; `parse_judge` reads the last such line and says when it could not (never a silent default).
"""

from __future__ import annotations

import re

# (canonical phrase, regex body). Bodies are matched case-insensitively; word boundaries are added at word edges.
_PHRASES: list[tuple[str, str]] = [
    ("the description", r"the (?:audio |given |provided )?descriptions?"),
    ("described as", r"(?<!\bbe\s)(?<!\bbest\s)\bdescribed as"),
    ("as described", r"as described"),
    ("metadata", r"meta-?data"),
    ("the user provided", r"the user (?:has )?(?:provided|gave|mentioned|listed|specified)"),
    ("provided text", r"(?:provided|given) (?:text|transcript|caption|labels?|tags?|information|info|details)"),
    ("information provided", r"(?:information|info|details|data) (?:provided|given)"),
    ("the given information", r"the given (?:information|info|details|data)"),
    ("the transcript says", r"the transcript(?:ion)? (?:says|said|shows|reads|states|mentions|indicates)"),
    ("as listed", r"as listed"),
    ("listed as", r"(?:is|are|was|were) listed as"),
    ("the caption", r"the captions?"),
    ("the label", r"the labels?"),
    ("labeled as", r"(?:is|are|was|were) (?:labell?ed|tagged|annotated|marked) as"),
    ("the tags", r"the tags"),
    ("the annotation", r"the annotations?"),
    ("<start_audio>", r"<start_audio>"),
    ("<end_audio>", r"<end_audio>"),
    ("start_audio", r"start_audio"),
    ("end_audio", r"end_audio"),
    ("(duration:", r"\(duration:"),
    ("according to the text", r"according to the (?:text|record|information|data)"),
    ("the text says", r"the text (?:says|said|states|mentions|indicates|shows|describes|notes)"),
    ("in the text", r"(?:in|from) the (?:given |provided )?text\b(?! of the speech)"),
    ("[MM:SS-MM:SS]", r"\[\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}"),
    ("|...|", r"(?<![|\w])\|(?=[^|\n]*[^\W\d_])[^\s|][^|\n]{0,78}[^\s|]\|(?![|\w])"),
]


def _compile(body: str) -> re.Pattern:
    # word boundaries where the phrase starts / ends with a word (a trailing 's?' or group still ends a word)
    head = r"(?<!\w)" if body[0].isalpha() else ""
    tail = r"(?!\w)" if body[-1].isalpha() or body.endswith(("?", ")")) else ""
    return re.compile(head + body.replace(" ", r"\s+") + tail, re.IGNORECASE)


LEAK_PATTERNS: list[tuple[str, re.Pattern]] = [(name, _compile(body)) for name, body in _PHRASES]


def find_leaks(text: str) -> list[str]:
    """Canonical leak phrases found in `text`, unique, in order of first appearance.

    Overlapping hits keep the longest at each place ('<start_audio>' is reported once, not also 'start_audio').
    """
    hits = sorted(
        ((m.start(), -(m.end() - m.start()), m.end(), name) for name, pat in LEAK_PATTERNS for m in pat.finditer(text)),
    )
    out: list[str] = []
    covered_to = -1
    for _start, _, end, name in hits:
        if end <= covered_to:
            continue  # inside a longer hit
        covered_to = max(covered_to, end)
        if name not in out:
            out.append(name)
    return out


# ---------------------------------------------------------------------------------------------------------------
# LLM judge

JUDGE_SYSTEM = """\
You check responses written by an audio assistant. The assistant is supposed to have listened to an audio clip. \
Decide whether the response reveals that the assistant did not hear the audio but instead read a text about it \
(a description, transcript, caption, label list, tags or metadata).

Rules:
1. It is a leak when the response quotes or paraphrases a text about the audio as text: "the description says", \
"according to the metadata", "the caption is", "the label reads", "the tags list".
2. It is a leak when the response says that the user or the prompt provided, listed or mentioned properties of \
the audio ("the user mentioned the emotion is 'sad'").
3. It is a leak when the response mentions the markers <start_audio> or <end_audio>, or text-record notation such \
as "(duration: 5s, ...)", timestamps in brackets like "[00:00-00:05]" or labels between vertical bars like |dog|.
4. It is not a leak to describe the audio in words, to state attributes as heard or inferred ("the speaker sounds \
angry", "I hear rain"), or to give a transcription when asked for one.
5. It is not a leak to refer to the user's question or instruction itself ("the user asks which instrument this \
is").
6. Judge only what the response says; do not guess how it was produced.

Examples:
- "The description says a dog barks twice, so the answer is a dog." -> leak.
- "I hear a dog barking twice in the distance, so the answer is a dog." -> no leak.
- "The user provided the emotion as 'happy', so the speaker is happy." -> leak.
- "The user wants to know the speaker's emotion. The voice sounds bright and upbeat, so happy." -> no leak.
- "Between <start_audio> and <end_audio> there is a piano." -> leak.
- "Transcription: 'Please close the door.' The speaker sounds calm." -> no leak.

Explain your decision in a few sentences, then write one final line in this format, with YES if the response \
leaks and NO if it does not:
ANSWER: YES|NO"""


def judge_messages(response: str) -> list[dict]:
    """Chat messages asking the leak judge about one response; the reply ends with 'ANSWER: YES|NO'."""
    user = f"Response to check:\n<RESPONSE>\n{response}\n</RESPONSE>\n\nDoes it leak? End with ANSWER: YES or ANSWER: NO."
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


_VERDICT = re.compile(r"ANSWER\s*:", re.IGNORECASE)


def parse_judge(text: str) -> tuple[str, bool]:
    """The judge's verdict from its last 'ANSWER:' line.

    Returns:
        `("yes", True)` (leak), `("no", True)`, or `("unparsed", False)` when there is no 'ANSWER:' or the word after
        the last one is not YES/NO (e.g. a truncated reply, or 'YES|NO' echoed from the instructions).
    """
    matches = list(_VERDICT.finditer(text))
    if not matches:
        return "unparsed", False
    rest = text[matches[-1].end():].strip()
    word = rest.split()[0] if rest else ""
    word = word.strip("*_`'\".,;:!()[]").lower()
    if word in ("yes", "no"):
        return word, True
    return "unparsed", False
