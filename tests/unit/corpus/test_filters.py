"""Target formation, every reject reason, configurable token bounds, and corpus statistics on a hand-made set."""

from __future__ import annotations

import json

import pytest

from alarm.config import FilterConfig
from alarm.corpus.filters import flag_row, target_of
from alarm.corpus.schema import REJECT_REASONS
from alarm.corpus.stats import corpus_stats, percentiles

CFG = FilterConfig(min_target_tokens=3, max_target_tokens=10, max_duration_s=60.0)
R0 = "I read the metadata.\n</think>\n\nIt is a dog."
R = "I hear a dog.\n</think>\n\nIt is a dog."


def words(text: str) -> int:
    return len(text.split())


def row(**over) -> dict:
    """A healthy, rephrased, non-instruction row; override columns per test."""
    base = {
        "key": "src/1", "source": "src", "instruction": False, "audio_ok": True, "audio_error": None,
        "row_error": None, "duration_s": 5.0, "prompt_origin": "template:labels:1",
        "answer_generated": R0, "finish_reason_generate": "stop", "n_tokens_generate": 9,
        "rephrase_input": "<NEW_TEXT_LLM_RESPONSE>...", "answer_rephrased": R, "finish_reason_rephrase": "stop",
        "has_answer_tag": True, "forced_rephrase": False, "complete_reasoning": True,
        "leak_generated": '["metadata"]', "leak_rephrased": "[]", "judge_label": None,
    }
    return {**base, **over}


def flags(r: dict, cfg: FilterConfig = CFG, count=words) -> list[str]:
    return flag_row(r, cfg, count)["flags"]


def test_healthy_row_kept_with_rephrased_target():
    out = flag_row(row(), CFG, words)
    assert out == {"target": R, "n_tokens_target": words(R), "flags": [], "keep": True}


def test_instruction_rows_use_r0():
    out = flag_row(row(instruction=True, rephrase_input=None, answer_rephrased=None, finish_reason_rephrase=None,
                       has_answer_tag=None), CFG, words)
    assert out["target"] == R0 and out["keep"]
    assert target_of(row(instruction=True)) == (R0, "generated")  # even if rephrase columns were filled


def test_rephrasing_disabled_uses_r0():
    r = row(rephrase_input=None, answer_rephrased=None, finish_reason_rephrase=None, has_answer_tag=None)
    assert target_of(r) == (R0, "generated") and flag_row(r, CFG, words)["keep"]


@pytest.mark.parametrize("over,reason", [
    ({"audio_ok": False, "audio_error": "undecodable: not a RIFF file"}, "undecodable"),
    ({"audio_ok": False, "audio_error": "empty: 0 samples"}, "empty_audio"),
    ({"audio_ok": False, "audio_error": "non_finite: NaN"}, "undecodable"),
    ({"audio_ok": False, "audio_error": None}, "undecodable"),
    ({"audio_ok": False, "row_error": "manifest row 7: no audio column"}, "undecodable"),
    ({"audio_ok": True, "audio_error": "too_long: 75 s"}, "too_long"),
    ({"duration_s": 60.0}, "too_long"),
    ({"audio_error": "bad_metadata: metadata.turns[0].start is missing"}, "bad_metadata"),
    ({"has_answer_tag": False, "answer_rephrased": None}, "no_answer_tag"),
    ({"finish_reason_rephrase": "error", "answer_rephrased": None, "has_answer_tag": False}, "rephrase_failed"),
    ({"has_answer_tag": True, "answer_rephrased": None}, "rephrase_failed"),
    ({"answer_rephrased": "tiny"}, "too_few_tokens"),
    ({"answer_rephrased": " ".join(["w"] * 11)}, "too_many_tokens"),
    ({"judge_label": "yes"}, "judge_leak"),
])
def test_each_reason(over, reason):
    out = flags(row(**over))
    assert reason in out and set(out) <= set(REJECT_REASONS)


def test_generate_failed_rows():
    failed = row(answer_generated=None, finish_reason_generate="error", rephrase_input=None, answer_rephrased=None,
                 finish_reason_rephrase=None, has_answer_tag=None)
    out = flag_row(failed, CFG, words)
    assert out == {"target": None, "n_tokens_target": None, "flags": ["generate_failed"], "keep": False}
    # a row skipped because its audio was rejected carries only the audio reason
    skipped = {**failed, "finish_reason_generate": "skipped", "audio_ok": False, "audio_error": "empty: none"}
    assert flags(skipped) == ["empty_audio"]
    # a row with no target and no other reason is never kept
    assert flags({**failed, "finish_reason_generate": "skipped"}) == ["generate_failed"]


def test_judge_no_and_unparsed_do_not_flag():
    assert flags(row(judge_label="no")) == [] and flags(row(judge_label="unparsed")) == []


def test_token_bounds_follow_the_config():
    text = " ".join(["w"] * 50)
    r = row(answer_rephrased=text)
    assert flags(r, FilterConfig(min_target_tokens=10, max_target_tokens=100)) == []
    assert flags(r, FilterConfig(min_target_tokens=51, max_target_tokens=100)) == ["too_few_tokens"]
    assert flags(r, FilterConfig(min_target_tokens=0, max_target_tokens=49)) == ["too_many_tokens"]
    assert flags(r, FilterConfig(min_target_tokens=50, max_target_tokens=50)) == []  # inclusive bounds
    # the default config is the paper's 100..612
    assert flags(r, FilterConfig()) == ["too_few_tokens"]


def test_token_count_from_the_row_when_no_counter():
    assert flag_row(row(n_tokens_target=2), CFG, None)["flags"] == ["too_few_tokens"]
    with pytest.raises(ValueError, match="count_tokens"):
        flag_row(row(), CFG, None)


def test_leak_flag_only_with_drop_leaks():
    leaky = row(answer_rephrased="The description says a dog barks here.")
    assert flags(leaky) == []
    assert flags(leaky, FilterConfig(min_target_tokens=3, max_target_tokens=10, drop_leaks=True)) == ["leak"]
    instr = row(instruction=True, answer_generated="The text says it is a dog.")
    assert flags(instr, FilterConfig(min_target_tokens=3, max_target_tokens=10, drop_leaks=True)) == []


def test_several_reasons_are_all_recorded_once():
    r = row(duration_s=70.0, audio_error="too_long: 70 s", judge_label="yes", answer_rephrased="short")
    assert flags(r) == ["too_long", "too_few_tokens", "judge_leak"]


# ---------------------------------------------------------------------------------------------------------------
# statistics


def finished(**over) -> dict:
    r = row(**over)
    out = {**r, **flag_row(r, CFG, words)}
    out["flags"] = json.dumps(out["flags"])
    out.setdefault("split", "train")
    return out


def test_corpus_stats_on_a_hand_made_set():
    rows = [
        finished(key="a/1", source="a", split="train"),                                   # kept, 9 tokens
        finished(key="a/2", source="a", split="validation", leak_rephrased='["the label"]',
                 answer_rephrased="one two three four five six seven"),                  # kept, 7 tokens
        finished(key="a/3", source="a", split="train", answer_rephrased="tiny", forced_rephrase=True,
                 leak_generated="[]"),                                                   # too_few_tokens
        finished(key="b/1", source="b", split="train", duration_s=61.0, judge_label="yes",
                 prompt_origin="llm:2"),                                                 # too_long + judge_leak
        finished(key="b/2", source="b", split="validation", instruction=True, rephrase_input=None,
                 answer_rephrased=None, finish_reason_rephrase=None, leak_rephrased=None,
                 prompt_origin="given"),                                                 # kept, R0 target
        finished(key="b/3", source="b", split="train", answer_generated=None, finish_reason_generate="error",
                 rephrase_input=None, answer_rephrased=None, finish_reason_rephrase=None, leak_generated="[]",
                 leak_rephrased=None, complete_reasoning=False, prompt_origin="template-fallback:labels:0"),
    ]
    s = corpus_stats(rows)
    assert s["rows"] == 6 and s["kept"] == 3
    assert s["per_source"] == {"a": {"rows": 3, "kept": 2}, "b": {"rows": 3, "kept": 1}}
    assert s["split"] == {"train": {"rows": 4, "kept": 1}, "validation": {"rows": 2, "kept": 2}}
    assert s["flags"]["too_few_tokens"] == 1 and s["flags"]["too_long"] == 1 and s["flags"]["judge_leak"] == 1
    assert s["flags"]["generate_failed"] == 1 and s["flags"]["leak"] == 0 and set(s["flags"]) == set(REJECT_REASONS)
    # leak rates over non-instruction rows: R0 leaked in a/1, a/2, b/1 of the 4 generated; R in 1 of 4 rephrased
    assert s["leak_rate"] == {"generated": 0.75, "rephrased": 0.25, "generated_rows": 4, "rephrased_rows": 4}
    assert s["target_origin"] == {"rephrased": 4, "generated": 1, "none": 1}
    assert s["prompt_origin"] == {"template": 3, "llm": 1, "given": 1, "template-fallback": 1}
    assert s["judge"] == {"yes": 1}
    assert s["forced_rephrase"] == 1 and s["incomplete_reasoning"] == 0
    # target tokens: all = [9, 7, 1, 9, 9]; kept = [9, 7, 9]
    assert s["target_tokens"]["all"] == pytest.approx({"p5": 2.2, "p50": 9, "p95": 9, "max": 9})
    assert s["target_tokens"]["kept"] == pytest.approx({"p5": 7.2, "p50": 9, "p95": 9, "max": 9})
    json.dumps(s)  # serialisable as stats.json


def test_stats_of_nothing():
    s = corpus_stats([])
    assert s["rows"] == 0 and s["leak_rate"]["generated"] is None
    assert s["target_tokens"]["all"] == {"p5": None, "p50": None, "p95": None, "max": None}


def test_percentiles_match_linear_interpolation():
    assert percentiles([1, 2, 3, 4, 5]) == {"p5": 1.2, "p50": 3, "p95": 4.8, "max": 5}
    assert percentiles([7]) == {"p5": 7, "p50": 7, "p95": 7, "max": 7}


MCQ = "Is the clip quiet?\n\nOptions:\n- no\n- yes\n\nAnswer with the exact text of the correct option and nothing else."


@pytest.mark.parametrize("rephrased,changed", [
    ("I hear it faintly, so it is quiet.\n</think>\n\nyes", False),
    ("I hear it faintly, so it is quiet.\n</think>\n\nYes.", False),   # case and a final period are the same option
    ("I hear it faintly, so it is not loud.\n</think>\n\nno", True),   # the rephrase flipped the answer
    ("I hear it faintly.\n</think>\n\nit is faint", True),              # names no option any more
])
def test_a_rephrase_that_changes_a_multiple_choice_answer_is_flagged(rephrased, changed):
    r = row(prompt=MCQ, answer_generated="The metadata says faint, so it is quiet.\n</think>\n\nyes",
            answer_rephrased=rephrased)
    assert ("answer_changed" in flags(r, FilterConfig(min_target_tokens=0))) is changed
    assert "answer_changed" not in flags(r, FilterConfig(min_target_tokens=0, drop_changed_answers=False))


@pytest.mark.parametrize("prompt,generated", [
    ("Describe the sound.", "It is a dog.\n</think>\n\nA dog barks."),  # no options: free text may change
    (MCQ, "The metadata says faint, so it is"),                          # R0 names no option: nothing to keep
])
def test_answers_without_an_option_to_keep_are_not_flagged(prompt, generated):
    r = row(prompt=prompt, answer_generated=generated, answer_rephrased="I hear it.\n</think>\n\nno")
    assert "answer_changed" not in flags(r, FilterConfig(min_target_tokens=0))


def test_the_options_of_a_native_mcq_prompt():
    from alarm.corpus.filters import options_of
    from alarm.eval.prompts import text_user_text

    assert options_of(text_user_text("Which?", ("a dog", "a cat - maybe", "no"))) == ("a dog", "a cat - maybe", "no")
    assert options_of("Which?\nA. dog\nB. cat") == ()
