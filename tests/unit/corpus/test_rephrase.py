"""Self-rephrasing: per-row input preparation, the chat layout, and output parsing (D19/D20 must not reappear)."""

from __future__ import annotations

from alarm.corpus.leak import find_leaks
from alarm.corpus.rephrase import (
    FEW_SHOT,
    REPHRASE_SYSTEM_PROMPT,
    parse_rephrase,
    prepare_rephrase_input,
    rephrase_messages,
)

R0_COMPLETE = "The description says a dog barks.\n</think>\n\nIt is a dog, as listed in the metadata."
R0_TRUNCATED = "The description says a dog barks. The caption mentions"


def rephraser_output(inner: str, own_reasoning: str = "I should swap a few words.") -> str:
    """What the rephraser engine returns: its own reasoning, </think>, then the answer block."""
    return f"{own_reasoning}\n</think>\n\n<answer>\n{inner}\n</answer>"


# ---------------------------------------------------------------------------------------------------------------
# input preparation


def test_prepare_engine_style_r0_without_leading_think():
    text, complete = prepare_rephrase_input(R0_COMPLETE)
    assert complete
    assert text == ("<text_llm_reasoning>\nThe description says a dog barks.\n</text_llm_reasoning>\n\n"
                    "It is a dog, as listed in the metadata.")


def test_prepare_r0_with_leading_think():
    text, complete = prepare_rephrase_input("<think>\nreasoning\n</think>\n\nanswer")
    assert complete and text == "<text_llm_reasoning>\nreasoning\n</text_llm_reasoning>\n\nanswer"


def test_prepare_truncated_r0_appends_closing_tag_and_reports_incomplete():
    text, complete = prepare_rephrase_input(R0_TRUNCATED + "  ")
    assert not complete
    assert text == f"<text_llm_reasoning>\n{R0_TRUNCATED}\n</text_llm_reasoning>"
    assert "<think>" not in text and "</think>" not in text


def test_prepare_decides_per_row():
    # a batch mixing both forms: each row gets its own decision (the reference used the first row's: D20)
    rows = ["<think>\na\n</think>\n\nb", "a\n</think>\n\nb"]
    assert [prepare_rephrase_input(r)[0] for r in rows] == [
        "<text_llm_reasoning>\na\n</text_llm_reasoning>\n\nb"] * 2


def test_prepare_renames_answer_tags_inside_r0():
    text, _ = prepare_rephrase_input("x\n</think>\n\n<answer>B</answer>")
    assert "<answer>" not in text and "<text_llm_answer>B</text_llm_answer>" in text


# ---------------------------------------------------------------------------------------------------------------
# messages


def test_messages_layout():
    msgs, complete = rephrase_messages(R0_COMPLETE)
    assert complete
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 4 + ["user"]
    assert msgs[0]["content"] == REPHRASE_SYSTEM_PROMPT
    last = msgs[-1]["content"]
    assert last.startswith("<NEW_TEXT_LLM_RESPONSE>\n<text_llm_reasoning>\nThe description says")
    assert "</NEW_TEXT_LLM_RESPONSE>\n\n" in last and "<answer></answer>" in last
    assert "stops in the middle" not in last
    assert "stops in the middle" in rephrase_messages(R0_TRUNCATED)[0][-1]["content"]
    assert R0_COMPLETE not in str(msgs[:-1])  # the row's text appears only in the last turn


def test_system_prompt_has_the_eight_rules_and_format():
    for n in range(1, 9):
        assert f"\n{n}. " in REPHRASE_SYSTEM_PROMPT
    for needle in ("(duration: 5s", "|dog barking|", "<text_llm_reasoning>", "<answer></answer>", "beginning of the"):
        assert needle in REPHRASE_SYSTEM_PROMPT


def test_few_shot_pairs_are_light_edits_that_remove_leaks():
    assert len(FEW_SHOT) == 4
    for original, edited in FEW_SHOT:
        assert find_leaks(original) and not find_leaks(edited)
        ratio = len(edited.split()) / len(original.split())
        assert 0.85 < ratio < 1.15
        assert original.count("\n\n") == edited.count("\n\n")  # paragraphs kept
        assert ("</think>" in original) == ("</think>" in edited)
    # the preserved mistakes stay (diesel guess, 10x for 5 dB)
    assert "diesel truck" in FEW_SHOT[1][1] and "10 times" in FEW_SHOT[2][1]
    # the assistant turns are in the exact format parse_rephrase expects
    msgs, _ = rephrase_messages(R0_COMPLETE)
    for (original, edited), turn in zip(FEW_SHOT, msgs[2:9:2], strict=True):
        complete = "</think>" in original
        assert parse_rephrase(turn["content"], complete).answer == edited.strip()


# ---------------------------------------------------------------------------------------------------------------
# parsing


def test_parse_complete_restores_think_and_drops_leading_tag():
    out = rephraser_output("<text_llm_reasoning>\nI hear a dog bark.\n</text_llm_reasoning>\n\nIt is a dog.")
    r = parse_rephrase(out, complete=True)
    assert r.has_answer_tag and r.answer == "I hear a dog bark.\n</think>\n\nIt is a dog."


def test_parse_normalises_the_separator_after_think():
    out = rephraser_output("<text_llm_reasoning>I hear it.</text_llm_reasoning>It is a dog.")
    assert parse_rephrase(out, True).answer == "I hear it.\n</think>\n\nIt is a dog."


def test_parse_truncated_stays_truncated():
    out = rephraser_output("<text_llm_reasoning>\nI hear a dog bark. It sounds like\n</text_llm_reasoning>\n\n"
                           "So the answer is a dog.")
    r = parse_rephrase(out, complete=False)
    assert r.answer == "I hear a dog bark. It sounds like"
    assert "</think>" not in r.answer and "answer is" not in r.answer


def test_parse_takes_last_answer_after_own_thinking():
    own = "I will write <answer>draft</answer> first, then fix it."
    out = rephraser_output("<text_llm_reasoning>\nfinal\n</text_llm_reasoning>\n\nok", own_reasoning=own)
    out = out.replace("\n</think>\n\n<answer>", "\n</think>\n\n<answer>old</answer>\n<answer>")
    assert parse_rephrase(out, True).answer == "final\n</think>\n\nok"


def test_parse_missing_tags_never_keeps_own_output():
    own_only = "Let me think about how to edit this... I hear a dog.\n</think>\n\nI hear a dog."
    for out in (own_only, "no tags at all", "<answer> only in reasoning </answer>\n</think>\n\nplain text",
                "x\n</think>\n\n<answer>\nunclosed because it ran out of tokens"):
        r = parse_rephrase(out, True)
        assert r.answer is None and r.has_answer_tag is False, out


def test_parse_forced_budget_output():
    # phase 1 cut off, forcing sentence (with its </think>), then the answer block
    out = ("I need to change 'description'... and" "Considering the limited time by the user, I have to give the "
           "solution based on the thinking directly now.\n</think>\n\n<answer>\n<text_llm_reasoning>\nI hear rain."
           "\n</text_llm_reasoning>\n\nRain.\n</answer>")
    assert parse_rephrase(out, True).answer == "I hear rain.\n</think>\n\nRain."


def test_parse_restores_r0_answer_tags():
    out = rephraser_output("<text_llm_reasoning>\nx\n</text_llm_reasoning>\n\n<text_llm_answer>B</text_llm_answer>")
    assert parse_rephrase(out, True).answer == "x\n</think>\n\n<answer>B</answer>"


def test_parse_malformed_blocks():
    lost = parse_rephrase(rephraser_output("I hear a dog. It is a dog."), complete=True)
    assert lost.answer is None and lost.has_answer_tag and "closing reasoning tag" in lost.problem
    empty = parse_rephrase(rephraser_output(""), complete=False)
    assert empty.answer is None and empty.has_answer_tag and empty.problem
    # an incomplete R0 whose edit lacks the closing tag is fine: nothing to strip
    assert parse_rephrase(rephraser_output("<text_llm_reasoning>\nI hear"), False).answer == "I hear"


def test_round_trip_through_prepare_and_parse_is_identity_for_an_unedited_response():
    for r0 in (R0_COMPLETE, R0_TRUNCATED):
        prepared, complete = prepare_rephrase_input(r0)
        assert parse_rephrase(rephraser_output(prepared), complete).answer == r0.strip()
