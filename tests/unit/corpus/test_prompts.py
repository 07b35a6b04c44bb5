"""Prompt choice (deterministic, spread, metadata-aware) and the LLM writer/checker round trip on messy outputs."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from alarm.corpus.describe import FAMILIES
from alarm.corpus.leak import find_leaks
from alarm.corpus.prompts import (
    FAMILY_FOCUS,
    MAX_PROMPT_CHARS,
    TEMPLATES,
    checker_messages,
    choose_prompt,
    eligible_templates,
    parse_candidates,
    parse_checker,
    select_prompt,
    writer_messages,
)

ROOT = Path(__file__).resolve().parents[3]
FULL_MD = {"text": "hi", "emotion": "sad", "gender": "f", "age": 3, "accent": "x", "language": "en", "genre": "g",
           "pitch": 3, "instrument_family": "bass", "instrument_source": "acoustic", "sentiment": "neg"}


def test_one_pool_per_family_of_reasonable_size():
    assert set(TEMPLATES) == set(FAMILIES) == set(FAMILY_FOCUS)
    for family, pool in TEMPLATES.items():
        assert 6 <= len(pool) <= 12, family
        texts = [t for t, _ in pool]
        assert len(set(texts)) == len(texts), family
        assert not any(find_leaks(t) for t in texts), family  # prompts never mention a text surrogate
        assert any("explain" in t.lower() or "reason" in t.lower() or "justify" in t.lower() for t in texts)


def test_choice_is_deterministic_and_origin_names_the_template():
    a = choose_prompt("esc50/1-100038-A-14", "labels", {"category": "dog"})
    assert a == choose_prompt("esc50/1-100038-A-14", "labels", {"category": "dog"})
    prompt, origin = a
    kind, family, idx = origin.split(":")
    assert (kind, family) == ("template", "labels") and TEMPLATES["labels"][int(idx)][0] == prompt


def test_choice_same_in_a_fresh_process():
    code = ("from alarm.corpus.prompts import choose_prompt; "
            "print([choose_prompt(f'k/{i}', 'caption', {})[1] for i in range(30)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONHASHSEED": "999", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([choose_prompt(f"k/{i}", "caption", {})[1] for i in range(30)])


@pytest.mark.parametrize("family", FAMILIES)
def test_choice_spreads_over_the_pool(family):
    md = dict(FULL_MD, turns=[{"speaker": "a", "start": 0, "end": 1, "emotion": "x", "sentiment": "y"}])
    counts = Counter(choose_prompt(f"src/{i}", family, md)[1] for i in range(2000))
    assert len(counts) == len(TEMPLATES[family])  # every template used
    assert max(counts.values()) < 2 * min(counts.values())


def test_templates_needing_a_field_are_skipped_without_it():
    no_emotion = {choose_prompt(f"s/{i}", "speaker", {"gender": "m"})[0] for i in range(500)}
    assert not any("emotion" in p.lower() or "feel" in p.lower() for p in no_emotion)
    assert any("male or female" in p for p in no_emotion)
    with_emotion = {choose_prompt(f"s/{i}", "speaker", {"Emotion": "sad"})[0] for i in range(500)}
    assert any("emotion" in p.lower() for p in with_emotion)
    # per-turn attributes count for the turns family
    idx = eligible_templates("turns", {"turns": [{"emotion": "happy"}]})
    assert any("emotion" in TEMPLATES["turns"][i][0] for i in idx)
    assert not any("emotion" in TEMPLATES["turns"][i][0] for i in eligible_templates("turns", {"turns": []}))


def test_unknown_family_raises():
    with pytest.raises(ValueError, match="valid families"):
        choose_prompt("k/1", "podcast", {})
    with pytest.raises(ValueError, match="valid families"):
        writer_messages("D", "podcast", 3)
    with pytest.raises(ValueError, match="n must be"):
        writer_messages("D", "labels", 0)


# ---------------------------------------------------------------------------------------------------------------
# writer / checker


def test_writer_messages():
    msgs = writer_messages("[00:00-00:05] |dog| (duration: 5s)", "labels", 4)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "[00:00-00:05] |dog| (duration: 5s)" in msgs[1]["content"] and "4" in msgs[1]["content"]
    assert "<answer>" in msgs[0]["content"] and "never sees" in msgs[0]["content"]


def test_parse_candidates_messy_output():
    text = (
        "Let me think about <answer> formats...\n</think>\n\n"
        "Here are some prompts:\n<answer>\n"
        "Prompts:\n"
        "1. \"What animal is making this sound?\"\n"
        "2) Describe the sound you hear.\n"
        "- **Is the sound close or far away?**\n"
        "* 'What animal is making this sound?'\n"
        "   \n"
        "(3) “How many times does it bark?”\n"
        f"{'x' * (MAX_PROMPT_CHARS + 1)}\n"
        "What is in the <start_audio> part?\n"
        "A) What time of day might it be?\n"
        "</answer>\nThanks!"
    )
    assert parse_candidates(text) == [
        "What animal is making this sound?",
        "Describe the sound you hear.",
        "Is the sound close or far away?",
        "How many times does it bark?",
        "What time of day might it be?",
    ]


def test_parse_candidates_unclosed_and_missing_blocks():
    assert parse_candidates("<answer>\nWhat is it?\nWhere is it") == ["What is it?", "Where is it"]
    assert parse_candidates("1. What is it?\n2. Where?") == []  # no block: fall back, never guess
    assert parse_candidates("reasoning with <answer>x</answer> inside, cut off") == ["x"]
    # a block only inside the model's own (finished) reasoning does not count
    assert parse_candidates("<answer>draft</answer> hmm\n</think>\n\nno block") == []


def test_checker_round_trip():
    msgs = checker_messages("[00:00-00:05] |dog| (duration: 5s)", ["What is it?", "What does the label say?"])
    assert "1. What is it?\n2. What does the label say?" in msgs[1]["content"]
    assert parse_checker("The second mentions a label.\n</think>\n<answer>1</answer>", 2) == [0]
    assert parse_checker("<answer>3, 1, 1, 9, 0</answer>", 3) == [0, 2]
    assert parse_checker("<answer>none</answer>", 3) == []
    assert parse_checker("I would pick 1 and 2", 3) == []  # no block -> nothing valid (recorded as fallback)


def test_select_prompt():
    cands = ["a?", "b?", "c?", "d?"]
    assert select_prompt("k/1", cands, []) is None
    assert select_prompt("k/1", cands, [7, -1]) is None
    picked = select_prompt("k/1", cands, [1, 3])
    assert picked == select_prompt("k/1", cands, [3, 1, 3]) and picked[0] in ("b?", "d?")
    assert picked[1] == f"llm:{cands.index(picked[0])}"
    spread = Counter(select_prompt(f"k/{i}", cands, [0, 1, 2, 3])[0] for i in range(400))
    assert len(spread) == 4
