"""Two-phase thinking budget over a scripted fake Generate; reasoning/answer splitting and <answer> extraction."""

from __future__ import annotations

import pytest

from alarm.llm.thinking import (
    FORCING_SUFFIX,
    BudgetedCompletion,
    Completion,
    extract_answer_tag,
    generate_with_budget,
    split_reasoning,
)


class ScriptedGenerate:
    """Fake engine: each prompt maps to a list of completions, one per phase; records every batched call."""

    def __init__(self, script: dict[str, list[Completion]]):
        self.script = script
        self.calls: list[tuple[list[str], list[int]]] = []

    def __call__(self, prompts: list[str], max_tokens: list[int]) -> list[Completion]:
        self.calls.append((list(prompts), list(max_tokens)))
        phase = len(self.calls) - 1
        out = []
        for p, cap in zip(prompts, max_tokens, strict=True):
            base = p.split("|", 1)[0]
            c = self.script[base][phase if "|" in p or phase == 0 else 0]
            assert c.n_tokens <= cap, f"fake completion for {base!r} exceeds its cap {cap}"
            out.append(c)
        return out


def extend(prompt: str, text: str) -> str:
    return f"{prompt}|{text}"


def test_no_forcing_when_rows_finish_within_budget():
    gen = ScriptedGenerate({
        "a": [Completion("think\n</think>\n\nanswer", 9, "stop")],
        "b": [Completion("short, no think tag", 3, "stop")],
        "c": [Completion("closed in time</think>\n\nbut the answer was cut", 10, "length")],
    })
    out = generate_with_budget(gen, ["a", "b", "c"], budget=10, max_tokens=50, max_total=60, extend=extend)
    assert len(gen.calls) == 1 and gen.calls[0] == (["a", "b", "c"], [10, 10, 10])
    assert out[0] == BudgetedCompletion("think\n</think>\n\nanswer", False, "stop", 9, 9)
    assert [o.forced for o in out] == [False] * 3 and out[2].finish_reason == "length"


def test_forcing_appends_the_exact_suffix_in_one_batched_second_call():
    gen = ScriptedGenerate({
        "a": [Completion("long reasoning", 10, "length"), Completion("final answer", 7, "stop")],
        "b": [Completion("done</think>\n\nok", 4, "stop")],
        "c": [Completion("more reasoning", 10, "length"), Completion("cut again", 20, "length")],
    })
    out = generate_with_budget(gen, ["a", "b", "c"], budget=10, max_tokens=20, max_total=None, extend=extend)
    assert len(gen.calls) == 2
    prompts2, caps2 = gen.calls[1]
    assert prompts2 == [f"a|long reasoning{FORCING_SUFFIX}", f"c|more reasoning{FORCING_SUFFIX}"]
    assert caps2 == [20, 20]  # no total cap: the reference's full max_tokens
    assert out[0] == BudgetedCompletion(f"long reasoning{FORCING_SUFFIX}final answer", True, "stop", 17, 10)
    assert out[1] == BudgetedCompletion("done</think>\n\nok", False, "stop", 4, 4)
    assert out[2].forced and out[2].finish_reason == "length" and out[2].n_tokens == 30
    assert FORCING_SUFFIX == ("Considering the limited time by the user, I have to give the solution based on the "
                              "thinking directly now.\n</think>\n\n")


def test_total_cap_limits_phase_two():
    gen = ScriptedGenerate({
        "a": [Completion("r", 10, "length"), Completion("x", 5, "length")],
        "b": [Completion("r", 8, "length"), Completion("y", 7, "stop")],
    })
    out = generate_with_budget(gen, ["a", "b"], budget=10, max_tokens=100, max_total=15, extend=extend)
    assert gen.calls[1][1] == [5, 7]  # 15 - phase-1 tokens, not the full 100 (D16)
    assert all(o.n_tokens <= 15 for o in out)


def test_cap_that_leaves_nothing_skips_phase_two():
    gen = ScriptedGenerate({"a": [Completion("reasoning", 10, "length")]})
    out = generate_with_budget(gen, ["a"], budget=10, max_tokens=100, max_total=10, extend=extend)
    assert len(gen.calls) == 1
    assert out == [BudgetedCompletion("reasoning", False, "length", 10, 10)]


def test_budget_above_total_is_capped_in_phase_one():
    gen = ScriptedGenerate({"a": [Completion("r", 5, "stop")]})
    generate_with_budget(gen, ["a"], budget=50, max_tokens=100, max_total=20, extend=extend)
    assert gen.calls[0][1] == [20]


def test_negative_budget_is_one_unconstrained_call():
    gen = ScriptedGenerate({"a": [Completion("long reasoning without end", 64, "length")],
                            "b": [Completion("x</think>y", 3, "stop")]})
    out = generate_with_budget(gen, ["a", "b"], budget=-1, max_tokens=64, max_total=None, extend=extend)
    assert gen.calls == [(["a", "b"], [64, 64])]
    assert out[0] == BudgetedCompletion("long reasoning without end", False, "length", 64, 64)


def test_errors_are_final_and_not_forced():
    gen = ScriptedGenerate({"a": [Completion("", 0, "error")]})
    out = generate_with_budget(gen, ["a"], budget=10, max_tokens=10, extend=extend)
    assert len(gen.calls) == 1 and out[0].finish_reason == "error" and not out[0].forced


def test_empty_batch_makes_no_call():
    gen = ScriptedGenerate({})
    assert generate_with_budget(gen, [], budget=10, max_tokens=10, extend=extend) == [] and gen.calls == []


def test_bad_arguments_and_a_short_result_raise():
    gen = ScriptedGenerate({"a": [Completion("x", 1, "stop")]})
    with pytest.raises(ValueError, match="budget"):
        generate_with_budget(gen, ["a"], budget=0, max_tokens=10, extend=extend)
    with pytest.raises(ValueError, match="max_total"):
        generate_with_budget(gen, ["a"], budget=5, max_tokens=10, max_total=0, extend=extend)

    def short(prompts, max_tokens):
        return []

    with pytest.raises(ValueError, match="one Completion per prompt"):
        generate_with_budget(short, ["a"], budget=5, max_tokens=10, extend=extend)


def test_split_reasoning():
    assert split_reasoning("I think.\n</think>\n\nThe answer.") == ("I think.", "The answer.", True)
    assert split_reasoning("<think>\nI think.</think>\nA</think>B") == ("I think.", "A</think>B", True)
    assert split_reasoning("still thinking") == ("still thinking", "", False)
    assert split_reasoning(f"r{FORCING_SUFFIX}ans") == (
        "rConsidering the limited time by the user, I have to give the solution based on the thinking directly "
        "now.", "ans", True)


def test_extract_answer_tag():
    assert extract_answer_tag("r <answer>A</answer> then <answer> B </answer> tail") == "B"
    assert extract_answer_tag("no tags") is None
    assert extract_answer_tag("<answer>unclosed") is None
    assert extract_answer_tag("<answer></answer>") == ""
