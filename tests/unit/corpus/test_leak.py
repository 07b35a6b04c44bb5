"""Leak detection: lexical hits and honest non-hits; the judge prompt and its strict verdict parsing."""

from __future__ import annotations

import pytest

from alarm.corpus.leak import JUDGE_SYSTEM, find_leaks, judge_messages, parse_judge


@pytest.mark.parametrize("text,expected", [
    ("The description says a dog barks.", ["the description"]),
    ("Based on the audio description, it's rain.", ["the description"]),
    ("The sound is described as a low hum.", ["described as"]),
    ("The METADATA lists the gender as female.", ["metadata"]),
    ("The user provided the emotion as 'happy'.", ["the user provided"]),
    ("The user mentioned that it is a cat.", ["the user provided"]),
    ("The provided text suggests a car.", ["provided text"]),
    ("From the provided text, it is a car.", ["in the text"]),
    ("The transcript says 'hello'.", ["the transcript says"]),
    ("The emotion, as listed, is anger.", ["as listed"]),
    ("The caption mentions birds; the labels include Speech.", ["the caption", "the label"]),
    ("It was labeled as Music and the tags agree.", ["labeled as", "the tags"]),
    ("Between <start_audio> and <end_audio> there is noise.", ["<start_audio>", "<end_audio>"]),
    ("the start_audio marker", ["start_audio"]),
    ("Looking at (duration: 5s, emotion: sad)", ["(duration:"]),
    ("According to the text, she is 29.", ["according to the text"]),
    ("Let me check the given information again.", ["the given information"]),
    ("The text says he is angry.", ["the text says"]),
    ("The segment [00:00-00:05] has a |dog barking| sound.", ["[MM:SS-MM:SS]", "|...|"]),
])
def test_hits(text, expected):
    assert find_leaks(text) == expected


@pytest.mark.parametrize("text", [
    "I hear a dog barking in the distance.",
    "Okay, the user wants to know what emotion the speaker is expressing. Let me listen again. The voice sounds "
    "tense and loud, so it is probably anger. I think the age is around 30.",
    "The sound could be described as a low hum; it is best described as mechanical.",
    "This record label released the song. The labelling of emotions is subjective.",
    "The speaker says: 'Please close the door.' Here is the transcription.",
    "| Sound | Count |\n|---|---|\n| bark | 2 |",
    "Given the fast tempo, the genre is likely punk. I remember that 120 bpm is common.",
    "At the beginning of the audio, a door slams; at the end of the audio, footsteps fade.",
    "A dog barked twice; the text of my answer is short.",
])
def test_honest_text_does_not_trip(text):
    assert find_leaks(text) == []


def test_unique_ordered_and_longest_overlap():
    text = "The description... <start_audio> ... the description again, metadata, The Description"
    assert find_leaks(text) == ["the description", "<start_audio>", "metadata"]


def test_judge_messages():
    msgs = judge_messages("I hear rain.")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == JUDGE_SYSTEM and JUDGE_SYSTEM.endswith("\nANSWER: YES|NO")
    assert "<RESPONSE>\nI hear rain.\n</RESPONSE>" in msgs[1]["content"]
    assert sum(line.startswith("- \"") for line in JUDGE_SYSTEM.splitlines()) == 6  # worked examples
    assert sum(line[:2] in {f"{i}." for i in range(1, 7)} for line in JUDGE_SYSTEM.splitlines()) == 6  # rules


@pytest.mark.parametrize("text,expected", [
    ("It quotes the description.\nANSWER: YES", ("yes", True)),
    ("No text is referenced.\nANSWER: NO", ("no", True)),
    ("answer: **No**.", ("no", True)),
    ("The rule says to end with ANSWER: YES or NO. Here: ANSWER: yes", ("yes", True)),
    ("I will end with ANSWER: YES|NO", ("unparsed", False)),
    ("ANSWER: NO ... wait, reconsidering. ANSWER:", ("unparsed", False)),
    ("It leaks, clearly.", ("unparsed", False)),
    ("ANSWER: maybe", ("unparsed", False)),
    ("", ("unparsed", False)),
])
def test_parse_judge(text, expected):
    assert parse_judge(text) == expected
