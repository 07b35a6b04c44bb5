"""Metadata loaders: four formats into one Item, their quirks, and errors naming the file, row and field."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from alarm.eval.benchmarks import BenchmarkDataError, load_items
from tests.unit.eval.helpers import air_row, mmau_row, mmsu_row, write_json, write_jsonl


def test_mmau_test_mini(mmau_items):
    assert len(mmau_items) == 1000
    assert Counter(it.groups["task"] for it in mmau_items) == {"sound": 333, "music": 334, "speech": 333}
    assert Counter(len(it.choices) for it in mmau_items) == {4: 948, 2: 27, 5: 24, 8: 1}
    assert Counter(it.gold for it in mmau_items) == {0: 395, 1: 271, 2: 208, 3: 126}
    first = mmau_items[0]
    assert first.audio == f"test-mini-audios/{first.id}.wav" and first.row == 0
    assert first.gold_text == first.choices[first.gold]


def test_mmau_list_valued_category_is_a_string_group(mmau_items):
    listed = [it for it in mmau_items if isinstance(it.record["category"], list)]
    assert len(listed) == 13
    assert all(it.groups["category"] == "+".join(it.record["category"]) for it in listed)
    assert all(isinstance(it.groups["category"], str) for it in mmau_items)


def test_mmar_json_and_jsonl_merge_by_id_not_position(tmp_path):
    rows = [{"id": f"m{i}", "audio_path": f"./audio/m{i}.wav", "question": f"Q{i}", "choices": ["x", "y"],
             "answer": "y", "modality": "sound", "category": "Perception Layer", "sub-category": "s"}
            for i in range(3)]
    old = [dict(r) for r in rows]
    old[1]["answer"] = "y (not a choice)"  # the 2025 file's answer-not-in-choices quirk
    a = write_json(tmp_path / "MMAR-meta.json", old)
    b = write_jsonl(tmp_path / "MMAR-meta.jsonl", list(reversed(rows)))  # other row order
    only_old = load_items("mmar", [a])
    assert only_old[1].gold is None and only_old[1].gold_text == "y (not a choice)"
    merged = load_items("mmar", [a, b])
    assert [it.id for it in merged] == ["m0", "m1", "m2"] and [it.row for it in merged] == [0, 1, 2]
    assert merged[1].gold == 1 and merged[1].audio == "audio/m1.wav"
    write_jsonl(tmp_path / "other.jsonl", rows[:2])
    with pytest.raises(BenchmarkDataError, match=r"cannot merge .* by id: ids only in the first: \['m2'\]"):
        load_items("mmar", [a, tmp_path / "other.jsonl"])


def test_jsonl_metadata_with_unicode_line_separators(tmp_path):
    rows = [mmsu_row(i, question=f"Q{i} first{sep}second") for i, sep in enumerate(["\u2028", "\u2029", "\x85"])]
    path = tmp_path / "mmsu.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")  # raw
    items = load_items("mmsu", [path])
    assert [it.question for it in items] == [r["question"] for r in rows]


def test_mmsu_lettered_choices_and_audio_path(tmp_path):
    items = load_items("mmsu", [write_jsonl(tmp_path / "mmsu.jsonl", [mmsu_row(7, "c"), mmsu_row(8, "a")])])
    it = items[0]
    assert it.id == "7" and it.choices == ("a7", "b7", "c7", "d7") and it.gold == 2
    assert it.audio == "audio/7.wav" and it.groups == {"category": "Perception", "sub-category": "Phonology",
                                                       "task_name": "t"}


def test_airbench_audio_rule_and_optional_choices(tmp_path):
    rows = [air_row(0), air_row(1, task="Audio_Grounding", dataset="AudioGrounding", choice_c="three",
                                choice_d=None)]
    items = load_items("airbench", [write_json(tmp_path / "Foundation_meta.json", rows)])
    assert items[0].audio == "Foundation/Speaker_Number_Verification_VoxCeleb1/clip0.wav"
    assert items[1].audio == "Foundation/Audio_Grounding_AudioGrounding/clip1.flac"  # .wav -> flac
    assert items[0].id == "100" and items[0].choices == ("one", "two") and items[0].gold == 1
    assert items[1].choices == ("one", "two", "three")
    assert items[0].groups["task_id"] == "Speaker_Number_Verification_VoxCeleb1"


@pytest.mark.parametrize("bad, match", [
    ({"choices": "x"}, r"m\.json: row 1 \(id 'q1'\): field 'choices' must be a list of at least 2 options"),
    ({"answer": ["x"]}, r"row 1 \(id 'q1'\): field 'answer' must be a string or a number, found list"),
    ({"task": 3}, r"row 1 \(id 'q1'\): field 'task' must be a string, found int 3"),
    ({"audio_id": "../x.wav"}, r"field 'audio_id' is not a relative audio path"),
    ({"category": {"a": 1}}, r"field 'category' must be a string \(or a list of strings\)"),
])
def test_malformed_rows_name_file_row_and_field(tmp_path, bad, match):
    path = write_json(tmp_path / "m.json", [mmau_row(0), {**mmau_row(1), **bad}])
    with pytest.raises(BenchmarkDataError, match=match):
        load_items("mmau", [path])


def test_malformed_files(tmp_path):
    row = mmau_row(0)
    del row["question"]
    with pytest.raises(BenchmarkDataError, match=r"row 0 \(id 'q0'\): field 'question' is missing .*bench"):
        load_items("mmau", [write_json(tmp_path / "a.json", [row])])
    (tmp_path / "b.json").write_text('{"not": "a list"}')
    with pytest.raises(BenchmarkDataError, match=r"b\.json: expected a JSON list of questions, found a dict"):
        load_items("mmau", [tmp_path / "b.json"])
    (tmp_path / "c.jsonl").write_text(json.dumps(mmsu_row(1)) + "\n{broken\n")
    with pytest.raises(BenchmarkDataError, match=r"c\.jsonl: line 2 is not valid JSON"):
        load_items("mmsu", [tmp_path / "c.jsonl"])
    with pytest.raises(BenchmarkDataError, match=r"expected a \.json .* or \.jsonl file, found suffix '.csv"):
        load_items("mmau", [tmp_path / "d.csv"])
    with pytest.raises(BenchmarkDataError, match="same id 'q0'"):
        load_items("mmau", [write_json(tmp_path / "e.json", [mmau_row(0), mmau_row(0)])])
    with pytest.raises(BenchmarkDataError, match=r"row 0: expected a JSON object, found list"):
        load_items("mmau", [write_json(tmp_path / "f.json", [[1]])])
    with pytest.raises(BenchmarkDataError, match=r"field 'choice_c' is missing while choice_d is set"):
        load_items("airbench", [write_json(tmp_path / "g.json", [air_row(0, choice_d="four")])])
    with pytest.raises(BenchmarkDataError, match="unknown benchmark 'mmxx'"):
        load_items("mmxx", [tmp_path / "a.json"])
    with pytest.raises(BenchmarkDataError, match="cannot read the metadata file"):
        load_items("mmau", [tmp_path / "missing.json"])
