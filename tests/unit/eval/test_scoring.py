"""The official and strict scorers against documented numbers (docs/evaluation.md) and the MMSU /
AIR-Bench letter rules, including their denominators."""

from __future__ import annotations

import json
import re

import pytest

from alarm.eval.benchmarks import Item, load_items
from alarm.eval.parsing import tokens
from alarm.eval.scoring import ScoreError, aggregate, official_verdicts, strict_keys, strict_verdicts
from tests.unit.eval.helpers import air_row, mmsu_row, write_json, write_jsonl

MMAU_KEYS = ("task", "difficulty", "sub-category")


def official(items, pred):
    return aggregate(official_verdicts("mmau", [(it, pred(it)) for it in items]), MMAU_KEYS)


def test_mmau_predictions_equal_gold(mmau_items):
    s = official(mmau_items, lambda it: it.gold_text)
    assert s["overall"] == {"correct": 1000, "total": 1000, "accuracy": 1.0}
    totals = {k: v["total"] for k, v in s["groups"]["task"].items()}
    assert totals == {"sound": 333, "music": 334, "speech": 333}
    assert all(v["accuracy"] == 1.0 for v in s["groups"]["difficulty"].values())
    assert len(s["groups"]["sub-category"]) == 27


def test_mmau_letter_prefix_breaks_string_match(mmau_items):
    assert official(mmau_items, lambda it: f"(A) {it.gold_text}")["overall"]["correct"] == 925
    assert official(mmau_items, lambda it: "A")["overall"]["correct"] == 2


def test_mmau_always_option_0(mmau_items):
    s = official(mmau_items, lambda it: it.choices[0])
    assert s["overall"]["correct"] == 398 and round(100 * s["overall"]["accuracy"], 1) == 39.8
    strict = aggregate(strict_verdicts([(it, 0) for it in mmau_items]), MMAU_KEYS)
    assert strict["overall"]["correct"] == 395  # gold at position 0


def test_bag_of_words_pairs_official_credits_strict_does_not(mmau_items):
    twins = {}  # id -> a wrong choice with the gold answer's word set (another string: copies are the gold)
    for it in mmau_items:
        same = [i for i, c in enumerate(it.choices)
                if i != it.gold and tokens(c) == tokens(it.gold_text) and c != it.gold_text]
        if same:
            twins[it.id] = same[0]
    assert len(twins) == 9 and any(k.startswith("40c9c875-") for k in twins)
    items = [it for it in mmau_items if it.id in twins]
    off = official_verdicts("mmau", [(it, it.choices[twins[it.id]]) for it in items])
    strict = strict_verdicts([(it, twins[it.id]) for it in items])
    assert all(v.correct for v in off) and not any(v.correct for v in strict)


def test_strict_groups_by_list_valued_category(mmau_items):
    keys = strict_keys("mmau", mmau_items)
    assert keys[:3] == MMAU_KEYS and "category" in keys
    s = aggregate(strict_verdicts([(it, it.gold) for it in mmau_items]), keys)
    assert sum(c["total"] for c in s["groups"]["category"].values()) == 1000
    assert s["groups"]["category"]["Reasoning"]["total"] >= 13


def test_missing_predictions_shrink_the_denominator(mmau_items):
    s = official(mmau_items[:10], lambda it: it.gold_text)
    assert s["overall"]["total"] == 10


def test_official_vocabulary(tmp_path):
    row = {"id": "m", "audio_path": "a.wav", "question": "q", "choices": ["x", "y"], "answer": "x",
           "modality": "ambient", "category": "Signal Layer"}
    [it] = load_items("mmar", [write_json(tmp_path / "m.json", [row])])
    with pytest.raises(ScoreError, match=r"item 'm' has modality='ambient'; the official scorer only knows "
                                         r"modality in \['mix-music-speech', "):
        official_verdicts("mmar", [(it, "x")])
    assert strict_verdicts([(it, 0)])[0].correct


@pytest.mark.parametrize("category, found", [("Acoustic Layer", "has category='Acoustic Layer'"),
                                              (None, "has no 'category'")])
def test_official_mmar_categories(tmp_path, category, found):
    row = {"id": "m", "audio_path": "a.wav", "question": "q", "choices": ["x", "y"], "answer": "x",
           "modality": "sound", **({"category": category} if category else {})}
    [it] = load_items("mmar", [write_json(tmp_path / "m.json", [row])])
    allowed = "['Cultural Layer', 'Perception Layer', 'Semantic Layer', 'Signal Layer']"
    with pytest.raises(ScoreError, match=re.escape(f"{found}; the official scorer only knows category in {allowed}")):
        official_verdicts("mmar", [(it, "x")])
    layers = [{**row, "id": f"m{i}", "category": c} for i, c in enumerate(json.loads(allowed.replace("'", '"')))]
    assert all(v.correct for v in official_verdicts("mmar", [(it, "x") for it in load_items(
        "mmar", [write_json(tmp_path / "ok.json", layers)])]))


def test_strict_credits_any_copy_of_a_repeated_gold_option(mmau_items):
    repeated = [it for it in mmau_items if len(set(it.choices)) < len(it.choices)]
    assert len(repeated) == 27
    gold_repeated = [it for it in repeated if it.choices.count(it.gold_text) > 1]
    assert len(gold_repeated) == 16  # e.g. a gold answer written as options 3 and 4
    for it in gold_repeated:
        copies = [i for i, c in enumerate(it.choices) if c == it.gold_text]
        assert it.gold == copies[0] and all(v.correct for v in strict_verdicts([(it, i) for i in copies]))
        others = [i for i in range(len(it.choices)) if i not in copies]
        assert not any(v.correct for v in strict_verdicts([(it, i) for i in others]))


def test_strict_gold_not_in_choices_is_always_wrong():
    it = Item("m", "q", ("a", "b"), None, "c", {}, "a.wav", 0, {})
    assert not strict_verdicts([(it, 0)])[0].correct and not strict_verdicts([(it, None)])[0].correct


def test_mmsu_official_rule(tmp_path):
    items = load_items("mmsu", [write_jsonl(tmp_path / "m.jsonl", [mmsu_row(i, "c") for i in range(6)])])
    responses = ["C", "The answer is C.", "Based on the audio, the answer is C.", "answer: c", "None", ""]
    vs = official_verdicts("mmsu", zip(items, responses, strict=True))
    assert [(v.counted, v.correct) for v in vs] == [
        (True, True), (True, True), (True, False), (False, False), (True, False), (True, False)]
    s = aggregate(vs, ("category", "category/sub-category"))
    assert s["overall"] == {"correct": 2, "total": 5, "accuracy": 0.4}
    assert s["excluded"] == 1 and s["counted_wrong_format"] == 2
    assert s["groups"]["category/sub-category"] == {"Perception/Phonology": {"correct": 2, "total": 5,
                                                                             "accuracy": 0.4}}


def test_mmsu_official_compares_choice_text_exactly(tmp_path):
    row = {**mmsu_row(1), "choice_d": "b1 "}  # a near-duplicate of the gold text "b1"
    [it] = load_items("mmsu", [write_jsonl(tmp_path / "m.jsonl", [row])])
    assert not official_verdicts("mmsu", [(it, "D")])[0].correct
    assert official_verdicts("mmsu", [(it, "B")])[0].correct


def test_airbench_official_rule(tmp_path):
    rows = [air_row(i) for i in range(5)] + [air_row(5, task="Music_Genre", dataset="GTZAN")]
    rows[1]["answer_gt"] = "one"  # A; the response below is misread as B
    items = load_items("airbench", [write_json(tmp_path / "a.json", rows)])
    responses = ["B", "Based on the audio, the answer is C.", "answer: c", "None", "", "B."]
    vs = official_verdicts("airbench", zip(items, responses, strict=True))
    assert [(v.counted, v.correct) for v in vs] == [
        (True, True), (True, False), (False, False), (False, False), (False, False), (True, True)]
    s = aggregate(vs, ("task_id",))
    assert s["excluded"] == 3  # fail_num
    assert s["groups"]["task_id"]["Speaker_Number_Verification_VoxCeleb1"] == {"correct": 1, "total": 2,
                                                                               "accuracy": 0.5}
    assert s["macro"] == {"key": "task_id", "accuracy": 0.75} and s["overall"]["accuracy"] == 2 / 3


def test_airbench_gold_not_in_choices_is_a_clear_error(tmp_path):
    rows = [air_row(0), air_row(1, answer_gt="three")]
    items = load_items("airbench", [write_json(tmp_path / "a.json", rows)])
    assert items[1].gold is None
    # the official scorer only looks for the gold letter once a response parsed
    assert official_verdicts("airbench", [(items[0], "B"), (items[1], "None")])[1].counted is False
    with pytest.raises(ScoreError, match=r"exits \(exit\(1\)\) .* 1 such item\(s\), e\.g\. ids \['101'\]"):
        official_verdicts("airbench", [(items[0], "B"), (items[1], "A")])
