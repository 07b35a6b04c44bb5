"""Answer parsing: ALARM's reference quirks, the official letter rule, our
standard parse, choice-text mapping and the named fallbacks (never a silent option 0)."""

from __future__ import annotations

import pytest

from alarm.eval.benchmarks import Item
from alarm.eval.parsing import official_letter, parse_answer, string_match


def item(n: int = 4, id: str = "x") -> Item:
    choices = tuple(f"choice {c}" for c in "abcdefgh"[:n])
    return Item(id, "Q?", choices, 1, choices[1], {}, "a.wav", 0, {})


def ref(answer: str, reasoning: str = "", n: int = 4, **kw):
    return parse_answer(item(n), answer, fmt="alarm", benchmark="mmau", mode="reference", reasoning=reasoning,
                        **kw)


@pytest.mark.parametrize("answer", ["it is 2", "<answer>Option_2</answer>", "<answer>2.</answer>", ""])
def test_reference_non_integer_is_option_0_only_when_asked(answer):
    p = ref(answer, fallback="first")  # what the ALARM reference did, silently
    assert (p.index, p.parse_ok, p.fallback, p.submission) == (0, False, "first", "choice a")
    p = ref(answer)  # no fallback unless asked for, in the reference mode too
    assert (p.index, p.parse_ok, p.fallback, p.submission) == (None, False, None, "")


@pytest.mark.parametrize("bench, answer", [("mmau", ""), ("mmau", "I am not sure"), ("mmsu", ""),
                                               ("airbench", "none of them")])
def test_native_reference_parse_has_no_fallback_unless_asked(bench, answer):
    p = parse_answer(item(), answer, fmt="native", benchmark=bench, mode="reference")
    assert (p.index, p.parse_ok, p.fallback, p.submission) == (None, False, None, answer)


def test_reference_quirks():
    p = ref("<answer>7</answer>")  # out of range: the literal number, scored wrong, no fallback
    assert (p.index, p.parse_ok, p.fallback, p.submission) == (None, False, None, "7")
    p = ref("<answer>-1</answer>")  # Python negative indexing: the last choice
    assert (p.index, p.parse_ok, p.submission) == (3, False, "choice d") and "negative" in p.note
    p = ref("blah <answer>1</answer> then <answer> 2 </answer>")  # the last tag wins
    assert (p.index, p.parse_ok) == (2, True)
    assert ref("3").index == 3  # no tag: the whole text goes through int()
    # the reference parsed the whole generated text, reasoning included
    assert ref("3", reasoning="Let me think.</think>", fallback="first").fallback == "first"
    assert ref("no tag", reasoning="maybe <answer>1</answer>").index == 1
    p = ref("<answer>x</answer>", fallback="none")  # the reference parse with our fallback
    assert (p.index, p.fallback, p.submission) == (None, None, "")


@pytest.mark.parametrize("answer, index", [
    ("<answer>2</answer>", 2), ("<answer> Option_2 </answer>", 2), ("<answer>(Option_3)</answer>", 3),
    ("<answer>option 1</answer>", 1), ("<answer>OPTION1</answer>", 1), ("<answer>(2).</answer>", 2),
    ("<answer>2.</answer>", 2), ("2", 2), ("Option_1", 1), ("x <answer>1</answer> y <answer>0</answer>", 0),
    ("<answer>7</answer>", None), ("<answer>-1</answer>", None), ("<answer>two</answer>", None),
    ("The answer is 2", None), ("<answer>2", None), ("", None), ("<answer>1 2</answer>", None),
    ("<answer>(2</answer>", None), ("<answer>2)</answer>", None), ("<answer>Option-2</answer>", None),
    ("<answer>\u0662</answer>", None), ("<answer>\uff12</answer>", None), ("\u0968", None),  # non-ASCII digits
])
def test_standard_alarm_parse(answer, index):
    p = parse_answer(item(), answer, fmt="alarm", benchmark="mmau")
    assert (p.index, p.parse_ok, p.fallback) == (index, index is not None, None)
    assert p.submission == ("" if index is None else item().choices[index])


def test_identical_options_are_named_in_the_note():
    it = Item("d", "Q", ("one", "six", "four", "four"), 2, "four", {}, "a.wav", 0, {})
    p = parse_answer(it, "<answer>3</answer>", fmt="alarm", benchmark="mmau")
    assert (p.index, p.parse_ok, p.note) == (3, True, "identical options: 2=3")
    p = parse_answer(it, "<answer>x</answer>", fmt="alarm", benchmark="mmau")
    assert p.note == "no option id in <answer>: 'x'; identical options: 2=3"
    assert parse_answer(item(), "<answer>3</answer>", fmt="alarm", benchmark="mmau").note == ""


def test_alarm_format_letter_benchmark_submits_letters():
    p = parse_answer(item(), "<answer>2</answer>", fmt="alarm", benchmark="mmsu")
    assert p.submission == "C"
    assert parse_answer(item(), "?", fmt="alarm", benchmark="airbench").submission == ""


@pytest.mark.parametrize("response, expected", [
    ("B", ("letter", "B")), ("B.", ("letter", "B")), ("The answer is C.", ("letter", "C")),
    ("Based on the audio, the answer is C.", ("letter", "B")),  # first character B: misread
    ("A man is speaking", ("letter", "A")), ("answer: c", ("format", "")), ("None", ("empty", "")),
    ("", ("empty", "")), ("  \n", ("empty", "")), ("\nD\n", ("letter", "D")), ("x", ("format", "")),
])
def test_official_letter_rule(response, expected):
    assert official_letter(response) == expected


@pytest.mark.parametrize("answer, index", [
    ("B", 1), ("B.", 1), ("(C)", 2), ("c", 2), ("The answer is C.", 2), ("answer: c", 2),
    ("Based on the audio, the answer is C.", 2), ("A man is speaking", None), ("None", None), ("E", None),
])
def test_standard_letter_parse(answer, index):
    p = parse_answer(item(), answer, fmt="native", benchmark="mmsu")
    assert (p.index, p.parse_ok) == (index, index is not None)
    assert p.submission == answer  # native: the official scorer reads the model's own words


def test_reference_letter_parse_is_the_official_rule():
    p = parse_answer(item(), "Based on the audio, the answer is C.", fmt="native", benchmark="mmsu",
                     mode="reference", fallback="none")
    assert (p.index, p.parse_ok) == (1, True)
    p = parse_answer(item(n=2), "D", fmt="native", benchmark="airbench", mode="reference", fallback="none")
    assert (p.index, p.parse_ok) == (None, False)


def test_native_text_answers():
    choices = ("From near to far", "From far to near", "Dog")
    it = Item("b", "Q", choices, 0, choices[0], {}, "a.wav", 0, {})
    parse = lambda a: parse_answer(it, a, fmt="native", benchmark="mmau")  # noqa: E731
    assert parse("from near to far.").index == 0  # exact text (case, final period ignored)
    assert parse("From far to near").index == 1
    assert parse("It is a dog barking").index == 2  # the only choice string_match credits
    p = parse("near and far")  # both orders are credited: ambiguous, not parsed
    assert (p.index, p.parse_ok, p.submission) == (None, False, "near and far")
    assert string_match("From near to far", "far to near from", it.choices)  # the bag-of-words blind spot


def test_fallback_modes_are_named_and_recorded():
    p = parse_answer(item(), "???", fmt="alarm", benchmark="mmau", fallback="none")
    assert (p.index, p.parse_ok, p.fallback, p.submission) == (None, False, None, "")
    p = parse_answer(item(), "???", fmt="alarm", benchmark="mmau", fallback="first")
    assert (p.index, p.parse_ok, p.fallback, p.submission) == (0, False, "first", "choice a")
    draws = [parse_answer(item(8, f"id{i}"), "???", fmt="alarm", benchmark="mmau", fallback="random", seed=3)
             for i in range(40)]
    assert all(d.fallback == "random" and not d.parse_ok for d in draws)
    assert len({d.index for d in draws}) > 3  # spread over the options
    again = [parse_answer(item(8, f"id{i}"), "???", fmt="alarm", benchmark="mmau", fallback="random", seed=3)
             for i in range(40)]
    assert [d.index for d in draws] == [d.index for d in again]  # seeded per item: reproducible
    other = [parse_answer(item(8, f"id{i}"), "???", fmt="alarm", benchmark="mmau", fallback="random", seed=4)
             for i in range(40)]
    assert [d.index for d in draws] != [d.index for d in other]
    with pytest.raises(ValueError, match="needs a seed"):
        parse_answer(item(), "???", fmt="alarm", benchmark="mmau", fallback="random")
    # a parsed answer never uses the fallback
    p = parse_answer(item(), "<answer>3</answer>", fmt="alarm", benchmark="mmau", fallback="first")
    assert (p.index, p.fallback) == (3, None)
    # native + fallback: the fallback choice is submitted instead of the unparsed text
    p = parse_answer(item(), "hmm", fmt="native", benchmark="mmsu", fallback="first")
    assert (p.index, p.submission) == (0, "A")
