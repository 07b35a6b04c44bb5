"""From a model's answer text to a chosen option, with `parse_ok` recorded and any fallback named.

    p = parse_answer(item, "<answer>2</answer>", fmt="alarm", benchmark="mmau")
    p.index, p.parse_ok, p.fallback, p.submission   # 2, True, None, item.choices[2]

Parse modes:
- `standard` (ours). ALARM format: the body of the last closed `<answer>...</answer>`, or the whole answer when
  it has no tag, is one option id N with 0 <= N < len(choices), in ASCII digits, written `N`, `Option_N`,
  `Option N` or `OptionN` (the prompt's own label, any case), optionally in balanced parentheses and followed
  by a period: `<answer>2</answer>`, `<answer>(Option_2)</answer>`, `2.`. Anything else (other digits such as
  "٢", words, two ids) is a parse failure. Native format: a letter alone or after "answer is"/"answer:", or the
  choice text (`letter_standard`, `text_choice`).
- `reference` (the published tools): ALARM's `int()` parse with its quirks (ALARM's generate_vllm_mcqa.py) and
  the official MMSU / AIR-Bench letter rule.
There is no silent option 0, in any mode: an unparsable answer chooses no option (scored wrong) unless the
caller names another fallback: `first` (option 0, what the ALARM reference did) or `random` (seeded per item).
Where an item repeats an option string (MMAU test-mini has such items), its note says which options are
identical: the strict scorer credits any copy of the gold text.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal, get_args

from alarm.config.eval import Fallback, ParseMode
from alarm.eval.benchmarks import LETTERS, Item, get_spec

PARSE_MODES: tuple[str, ...] = get_args(ParseMode)
FALLBACKS: tuple[str, ...] = get_args(Fallback)

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
_OPTION_ID = re.compile(r"(?:\((?:option[_ ]?)?([0-9]+)\)|(?:option[_ ]?)?([0-9]+))\.?", re.I)
_LETTER = re.compile(r"(?:.*\banswer(?:\s+is)?\s*[:\-]?\s*)?[(\[]?([A-D])[)\]]?\.?", re.I | re.S)
_TOKENS = re.compile(r"\b\w+\b")


@dataclass(frozen=True)
class Parsed:
    """The chosen option for one answer.

    Attributes:
        index: The chosen option (after any fallback); None = no option (scored wrong).
        parse_ok: The answer named a valid option under the parse mode.
        fallback: "first" or "random" when the fallback chose `index`, else None.
        submission: The prediction written to the benchmark's submission file: the model's own text for a
            parsed native answer (the official scorer reads it as is), else the chosen choice text or letter.
        note: Why parsing failed, or which reference quirk applied.
    """

    index: int | None
    parse_ok: bool
    fallback: str | None
    submission: str
    note: str = ""


def tokens(text: str) -> set[str]:
    return set(_TOKENS.findall(text.lower()))


# -- the rules -----------------------------------------------------------------------------------------------


def alarm_standard(answer: str, n: int) -> tuple[int | None, str]:
    """The last closed `<answer>...</answer>` (else the whole answer) holding one option id in range, in one of
    the forms the module docstring lists."""
    tags = _ANSWER_TAG.findall(answer)
    body = (tags[-1] if tags else answer).strip()
    m = _OPTION_ID.fullmatch(body)
    if m is None:
        where = "<answer>" if tags else "the answer (no <answer> tag)"
        return None, f"no option id in {where}: {body[:40]!r}"
    k = int(m.group(1) or m.group(2))
    return (k, "") if k < n else (None, f"option id {k} out of range for {n} options")


def alarm_reference(text: str, n: int) -> tuple[int | None, str | None, str]:
    """ALARM's parse (generate_vllm_mcqa.py): (index, literal, note). The text after the last `<answer>` and
    before the next `</answer>` (the whole text without tags) goes through int(); ValueError -> no index (the
    reference then took option 0); an out-of-range id becomes the literal string of the number (scored wrong);
    a negative id indexes from the end (-1 = the last option)."""
    body = text.split("<answer>")[-1].split("</answer>")[0].strip()
    try:
        k = int(body)
    except ValueError:
        return None, None, f"not an integer: {body[:40]!r}"
    if not -n <= k < n:
        return None, str(k), f"option id {k} out of range for {n} options (the reference keeps the literal)"
    if k < 0:
        return k % n, None, f"negative option id {k} (the reference indexes from the end)"
    return k, None, ""


def letter_standard(answer: str, n: int) -> tuple[int | None, str]:
    """A letter alone ("B", "(B)", "B.") or after "answer is" / "answer:" at the end, any case."""
    m = _LETTER.fullmatch(answer.strip())
    if m is None:
        return None, f"no option letter in {answer.strip()[:40]!r}"
    k = LETTERS.index(m.group(1).upper())
    return (k, "") if k < n else (None, f"letter {m.group(1).upper()} but only {n} options")


def official_letter(response: str) -> tuple[Literal["letter", "empty", "format"], str]:
    """The official MMSU / AIR-Bench rule: after strip() and removing newlines, the first character if it is
    one of A-D, else the second-to-last (covers "The answer is A."). "None" or empty -> "empty"; anything
    else -> "format". Free text starting with a capital A-D is misread: "Based on ... is C." -> B."""
    p = response.strip().replace("\n", "")
    if not p or p == "None":
        return "empty", ""
    if p[0] in LETTERS:
        return "letter", p[0]
    if len(p) > 1 and p[-2] in LETTERS:
        return "letter", p[-2]
    return "format", ""


def text_choice(answer: str, choices: tuple[str, ...]) -> tuple[int | None, str]:
    """The choice whose text the answer is (case, spacing and a final period ignored), else the only choice
    the official `string_match` credits."""
    norm = _normalise(answer)
    exact = [i for i, c in enumerate(choices) if _normalise(c) == norm]
    if exact:
        return exact[0], ""
    credited = [i for i, c in enumerate(choices) if string_match(c, answer, choices)]
    if len(credited) == 1:
        return credited[0], ""
    what = "matches no option" if not credited else f"matches options {credited}"
    return None, f"{what}: {answer[:40]!r}"


def _normalise(text: str) -> str:
    return " ".join(text.strip().strip("\"'`").rstrip(".").lower().split())


def string_match(answer: str, prediction: str, choices: tuple[str, ...] | list[str]) -> bool:
    """The official MMAU/MMAR rule (their evaluation.py): the answer's word set is inside the prediction's, and
    the prediction has no word unique to a choice whose word set differs from the answer's. Word sets ignore
    order, so a wrong choice with the answer's words is credited too ("From near to far" / "far to near")."""
    pred, gold = tokens(prediction), tokens(answer)
    if not pred:
        return False
    wrong: set[str] = set()
    for c in choices:
        t = tokens(c)
        if t != gold:
            wrong |= t - gold
    return gold <= pred and not (pred & wrong)


# -- parse + fallback ----------------------------------------------------------------------------------------


def parse_answer(item: Item, answer: str, *, fmt: str, benchmark: str, mode: str = "standard",
                 fallback: str = "none", seed: int | None = None, reasoning: str = "") -> Parsed:
    """Choose an option for `answer` (the text after the reasoning).

    Args:
        fmt: The prompt format the answer replies to ("alarm" or "native").
        mode: "standard" or "reference". The reference ALARM parse reads `reasoning + answer`, as the
            reference read the whole generated text.
        fallback: What an unparsable answer chooses: "none" (no option, in every mode), "first" or "random".
        seed: Needed by the random fallback; the option is drawn from a generator seeded by (seed, item id),
            so it does not depend on the order items finish in.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown fallback {fallback!r}; expected one of {FALLBACKS}")
    if mode not in PARSE_MODES:
        raise ValueError(f"unknown parse mode {mode!r}; expected one of {PARSE_MODES}")
    letters = get_spec(benchmark).native_answer == "letter"
    n, literal = len(item.choices), None
    if fmt == "alarm" and mode == "reference":
        index, literal, note = alarm_reference(reasoning + answer, n)
        ok = index is not None and not note
    elif fmt == "alarm":
        index, note = alarm_standard(answer, n)
        ok = index is not None
    elif fmt == "native" and letters and mode == "reference":
        status, letter = official_letter(answer)
        index = LETTERS.index(letter) if status == "letter" and LETTERS.index(letter) < n else None
        note = "" if index is not None else f"official letter rule: {status} {letter}".strip()
        ok = index is not None
    elif fmt == "native":
        index, note = letter_standard(answer, n) if letters else text_choice(answer, item.choices)
        ok = index is not None
    else:
        raise ValueError(f"unknown prompt format {fmt!r}; expected 'alarm' or 'native'")

    used = None
    if index is None and literal is None and fallback != "none":
        if fallback == "random" and seed is None:
            raise ValueError("the random fallback needs a seed")
        index = 0 if fallback == "first" else random.Random(f"{seed}:{item.id}").randrange(n)
        used = fallback
    return Parsed(index, ok, used, _submission(item, answer, fmt, letters, index, ok, literal),
                  "; ".join(filter(None, (note, identical_options(item.choices)))))


def identical_options(choices: tuple[str, ...]) -> str:
    """'identical options: 3=4' when options repeat a string (exactly), else ''."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(choices):
        groups.setdefault(c, []).append(i)
    same = ["=".join(map(str, g)) for g in groups.values() if len(g) > 1]
    return f"identical options: {', '.join(same)}" if same else ""


def _submission(item: Item, answer: str, fmt: str, letters: bool, index: int | None, ok: bool,
                literal: str | None) -> str:
    if fmt == "native" and (ok or index is None):
        return answer  # the official scorer judges the model's own words
    if index is not None:
        return LETTERS[index] if letters else item.choices[index]
    return literal or ""
