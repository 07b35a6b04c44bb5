"""The two scorers: `official` (each benchmark's official scorer, quirks included) and `strict` (index-based).

    verdicts = official_verdicts("mmau", [(item, submission_text), ...])
    verdicts = strict_verdicts([(item, chosen_index_or_None), ...])
    table = aggregate(verdicts, ("task", "difficulty"))   # overall + per group: correct / total / accuracy

Official rules (docs/evaluation.md): MMAU and MMAR credit the submission text by `string_match` against
the gold text; MMSU and AIR-Bench read a letter (first character, else the second-to-last). MMSU drops a
wrong-format response from the denominator and counts "None"/empty as wrong; AIR-Bench drops both
(`fail_num`) and stops the whole run when a parsed item's gold answer is not a choice (here: `ScoreError`
naming the items). A verdict is (counted, correct); aggregation is micro accuracy, as every official scorer
prints it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from alarm.errors import AlarmError
from alarm.eval.benchmarks import LETTERS, Item, get_spec
from alarm.eval.parsing import official_letter, string_match

# Fixed vocabularies of the official MMAU/MMAR scorers (the dicts they tally into: Sakshi113/MMAU evaluation.py,
# ddlBoJack/MMAR code/evaluation.py); a missing field or any other value is a KeyError there.
OFFICIAL_VOCAB: dict[str, dict[str, frozenset[str]]] = {
    "mmau": {"task": frozenset({"sound", "music", "speech"}),
             "difficulty": frozenset({"easy", "medium", "hard"})},
    "mmar": {"modality": frozenset({"sound", "music", "speech", "mix-sound-music", "mix-sound-speech",
                                    "mix-music-speech", "mix-sound-music-speech"}),
             "category": frozenset({"Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer"})},
}
SCORERS: tuple[str, ...] = ("official", "strict")


class ScoreError(AlarmError, ValueError):
    """Predictions or metadata the official scorer cannot score (it would crash or exit)."""


@dataclass(frozen=True)
class Verdict:
    """One item under one scorer. counted: in the denominator; status: 'scored', 'excluded' (MMSU wrong
    format, AIR-Bench fail_num) or 'wrong_format_counted' (MMSU "None"/empty, in the denominator)."""

    item: Item
    counted: bool
    correct: bool
    status: str = "scored"


# -- verdicts ------------------------------------------------------------------------------------------------


def official_verdicts(benchmark: str, rows: Iterable[tuple[Item, str]]) -> list[Verdict]:
    """The official scorer's verdict per item. rows: (item, the prediction field of its submission record)."""
    rows = list(rows)
    check_vocab(benchmark, [it for it, _ in rows])
    if get_spec(benchmark).native_answer == "text":
        return [Verdict(it, True, string_match(it.gold_text, pred, it.choices)) for it, pred in rows]
    verdicts, no_gold = [], []
    for it, pred in rows:
        status, letter = official_letter(pred)
        if status == "letter":
            chosen = it.record.get(f"choice_{letter.lower()}")
            if benchmark == "airbench":
                gold = _official_gold_letter(it)
                if gold is None:
                    no_gold.append(it.id)
                verdicts.append(Verdict(it, True, letter == gold))
            else:  # MMSU: the chosen choice's text equals answer_gt (exact, no strip)
                correct = chosen is not None and chosen == it.record.get("answer_gt")
                verdicts.append(Verdict(it, True, correct))
        elif status == "empty" and benchmark == "mmsu":
            verdicts.append(Verdict(it, True, False, "wrong_format_counted"))
        else:
            verdicts.append(Verdict(it, False, False, "excluded"))
    if no_gold:
        raise ScoreError(
            f"airbench: the official scorer exits (exit(1)) when a parsed item's answer_gt equals none of "
            f"its choices; {len(no_gold)} such item(s), e.g. ids {no_gold[:5]}. Fix the metadata or score "
            f"with scorer=strict"
        )
    return verdicts


def _official_gold_letter(item: Item) -> str | None:
    gold = item.record.get("answer_gt")
    return next((x for x in LETTERS if item.record.get(f"choice_{x.lower()}") == gold), None)


def check_vocab(benchmark: str, items: Sequence[Item]) -> None:
    """Raise ScoreError naming the first item whose group field the official scorer cannot tally (it would raise
    KeyError), with the allowed values. Run before inference when the official scorer is asked for."""
    for key, allowed in OFFICIAL_VOCAB.get(benchmark, {}).items():
        bad = [it for it in items if it.groups.get(key) not in allowed]
        if bad:
            value = bad[0].groups.get(key)
            found = f"has {key}={value!r}" if value is not None else f"has no {key!r}"
            raise ScoreError(
                f"{benchmark}: {len(bad)} item(s) the official scorer cannot score, e.g. item {bad[0].id!r} "
                f"{found}; the official scorer only knows {key} in {sorted(allowed)} (it raises KeyError). Fix "
                f"the metadata, or use scorer=strict for other data"
            )


def strict_verdicts(rows: Iterable[tuple[Item, int | None]]) -> list[Verdict]:
    """Index-based: correct iff the chosen option is the gold one, that is the gold index or another option with
    the identical string (the gold index is the first copy; no scorer can tell which copy was meant). An item
    whose answer is not a choice, or with no chosen option, is wrong. Every item counts. The forms an answer may
    take to choose an option are the parse mode's (`alarm.eval.parsing`)."""
    return [Verdict(it, True, index is not None and it.gold is not None and it.choices[index] == it.choices[it.gold])
            for it, index in rows]


# -- aggregation ---------------------------------------------------------------------------------------------


def _cell(correct: int, total: int) -> dict:
    return {"correct": correct, "total": total, "accuracy": correct / total if total else None}


def group_value(item: Item, key: str) -> str | None:
    """A group field; 'a/b' joins two fields (MMSU's per (category, sub-category) rows)."""
    if key in item.groups or "/" not in key:
        return item.groups.get(key)
    parts = [item.groups.get(k) for k in key.split("/")]
    return None if None in parts else "/".join(parts)


def aggregate(verdicts: Sequence[Verdict], keys: Sequence[str]) -> dict:
    """Micro accuracy overall and per value of each group key, plus the macro mean over the first key's groups
    (AIR-Bench prints no overall; its leaderboard "Average" is roughly this macro mean over task ids)."""
    counted = [v for v in verdicts if v.counted]
    groups: dict[str, dict[str, dict]] = {}
    for key in keys:
        tally: dict[str, list[int]] = {}
        for v in counted:
            value = group_value(v.item, key)
            if value is not None:
                t = tally.setdefault(value, [0, 0])
                t[0] += v.correct
                t[1] += 1
        groups[key] = {g: _cell(c, n) for g, (c, n) in sorted(tally.items())}
    first = [c["accuracy"] for c in groups.get(keys[0], {}).values()] if keys else []
    return {
        "overall": _cell(sum(v.correct for v in counted), len(counted)),
        "macro": {"key": keys[0], "accuracy": sum(first) / len(first)} if first else None,
        "excluded": sum(not v.counted for v in verdicts),
        "counted_wrong_format": sum(v.status == "wrong_format_counted" for v in verdicts),
        "groups": groups,
    }


def strict_keys(benchmark: str, items: Sequence[Item]) -> tuple[str, ...]:
    """The official group keys, then every other group field the items have."""
    keys = list(get_spec(benchmark).official_groups)
    for it in items:
        keys += [k for k in it.groups if k not in keys]
    return tuple(keys)
