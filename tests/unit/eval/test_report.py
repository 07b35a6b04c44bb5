"""Scoring a run's predictions into the report (the facts docs/evaluation.md lists) and the submission files."""

from __future__ import annotations

import json

import pytest

from alarm.eval.benchmarks import load_items
from alarm.eval.report import score_predictions, submission_text, write_outputs
from alarm.files import atomic_write
from tests.unit.eval.helpers import air_row, mmau_row, mmsu_row, write_json, write_jsonl

CONTEXT = {"max_thinking_tokens": 8192, "max_tokens": 0, "temperature": None, "seed": 7, "model": "fake",
           "meta": [{"path": "/x/mmau-test-mini.json", "sha256": "9f18fda99f8dbc2b"}]}


def preds(mapping):
    return {k: {"answer": v, "reasoning": "", "finish_reason": "STOP"} for k, v in mapping.items()}


def test_mmau_always_option_0_report(mmau_items):
    run = score_predictions(mmau_items, preds({it.id: "<answer>0</answer>" for it in mmau_items}),
                            benchmark="mmau", fmt="alarm")
    s = run.report["scores"]
    assert s["official"]["overall"]["correct"] == 398 and s["strict"]["overall"]["correct"] == 395
    assert run.report["parse"]["failure_rate"] == 0


def test_mmau_submission_and_report(tmp_path):
    rows = [mmau_row(i, answer=i % 4) for i in range(6)]
    items = load_items("mmau", [write_json(tmp_path / "m.json", rows)])
    answers = {"q0": "<answer>0</answer>", "q1": "<answer>3</answer>", "q2": "no idea",
               "q3": "<answer>3</answer>", "q4": "<answer>9</answer>"}  # q5 unanswered
    run = score_predictions(items, preds(answers), benchmark="mmau", fmt="alarm", fallback="none")
    r = run.report
    assert r["items"] == {"metadata": 6, "answered": 5, "unanswered": 1, "answer_withheld": 0,
                          "gold_not_in_choices": 0}
    assert (r["parse"]["failed"], r["parse"]["failure_rate"], r["parse"]["fallback_used"]) == (2, 0.4, {})
    assert r["scores"]["official"]["overall"] == {"correct": 2, "total": 5, "accuracy": 0.4}
    assert r["scores"]["strict"]["overall"]["correct"] == 2
    paths = write_outputs(tmp_path / "out", run, CONTEXT, meta_suffix=".json")
    assert set(paths) == {"report.json", "report.md", "scored.jsonl", "mmau-submission.json"}
    sub = json.loads(paths["mmau-submission.json"].read_text())
    assert [s["id"] for s in sub] == ["q0", "q1", "q2", "q3", "q4"]  # metadata order, answered only
    assert sub[1]["model_output"] == sub[1]["model_prediction"] == items[1].choices[3]
    assert sub[2]["model_output"] == "" and sub[0]["audio_id"] == "./test-mini-audios/q0.wav"
    report = json.loads(paths["report.json"].read_text())
    assert report["run"]["max_thinking_tokens"] == 8192 and report["benchmark_version"] == "MMAU v05.15.25"
    md = paths["report.md"].read_text()
    for fact in ("MMAU v05.15.25", "mmau-test-mini.json sha256 9f18fda99f8d", "| thinking budget "
                 "(max_thinking_tokens) | 8192 |", "| max_tokens | 0 (server default) |", "| seed | 7 |",
                 "| parse failures | 2 (40.00%); fallback used: none |", "| official | 40.00% | 2 / 5 | 0 |",
                 "| parse / fallback | standard / none |", "### strict: per task"):
        assert fact in md, fact
    scored = [json.loads(line) for line in paths["scored.jsonl"].read_text().splitlines()]
    assert scored[2] == {"id": "q2", "index": None, "gold": 2, "parse_ok": False, "fallback": None,
                         "submission": "", "note": scored[2]["note"], "finish_reason": "STOP",
                         "correct_official": False, "correct_strict": False}
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_withheld_answers_get_a_submission_and_no_score(tmp_path):
    rows = [{k: v for k, v in mmau_row(i).items() if k != "answer"} for i in range(3)]  # like MMAU test
    items = load_items("mmau", [write_json(tmp_path / "mmau-test.json", rows)])
    assert all(it.gold is None and it.gold_text is None for it in items)
    answers = preds({"q0": "<answer>2</answer>", "q1": "?"})
    run = score_predictions(items, answers, benchmark="mmau", fmt="alarm")
    assert run.report["scores"] == {} and run.report["items"]["answer_withheld"] == 3
    assert any("HF Space" in n for n in run.report["notes"])
    paths = write_outputs(tmp_path / "out", run, CONTEXT)
    assert [r["model_output"] for r in json.loads(paths["mmau-submission.json"].read_text())] == [
        items[0].choices[2], ""]
    assert "## Scores" in paths["report.md"].read_text()


def test_reference_parse_reproduces_alarm(tmp_path):
    items = load_items("mmau", [write_json(tmp_path / "m.json", [mmau_row(i, answer=0) for i in range(4)])])
    answers = {"q0": "junk", "q1": "<answer>-1</answer>", "q2": "<answer>7</answer>",
               "q3": "<answer>0</answer>"}
    run = score_predictions(items, preds(answers), benchmark="mmau", fmt="alarm", parse="reference")
    assert run.report["settings"]["fallback"] == "none" and run.report["parse"]["fallback_used"] == {}
    assert run.report["scores"]["official"]["overall"]["correct"] == 1  # q1 (-1: the last option) is wrong
    run = score_predictions(items, preds(answers), benchmark="mmau", fmt="alarm", parse="reference",
                            fallback="first")
    assert run.report["settings"]["fallback"] == "first"
    assert [p.submission for _, _, p in run.rows] == [items[0].choices[0], items[1].choices[3], "7",
                                                      items[3].choices[0]]
    assert run.report["parse"]["fallback_used"] == {"first": 1} and run.report["parse"]["failed"] == 3
    assert run.report["scores"]["official"]["overall"]["correct"] == 2  # the option-0 fallback scores


def test_empty_native_answers_score_zero_unless_a_fallback_is_asked_for(mmau_items):
    empty = preds({it.id: "" for it in mmau_items})
    for parse in ("standard", "reference"):
        run = score_predictions(mmau_items, empty, benchmark="mmau", fmt="native", parse=parse)
        assert run.report["scores"]["official"]["overall"]["correct"] == 0
        assert run.report["scores"]["strict"]["overall"]["correct"] == 0
    run = score_predictions(mmau_items, empty, benchmark="mmau", fmt="native", parse="reference", fallback="first")
    assert run.report["scores"]["official"]["overall"]["accuracy"] == pytest.approx(0.398, abs=0.0005)


def test_mmar_submission_keeps_the_container(tmp_path):
    row = {"id": "m0", "audio_path": "./audio/m0.wav", "question": "q", "choices": ["x", "y"], "answer": "y",
           "modality": "sound", "category": "Signal Layer", "sub-category": "s"}
    for suffix in (".json", ".jsonl"):
        path = (write_json if suffix == ".json" else write_jsonl)(tmp_path / f"MMAR-meta{suffix}", [row])
        run = score_predictions(load_items("mmar", [path]), preds({"m0": "<answer>1</answer>"}),
                                benchmark="mmar", fmt="alarm")
        name, text = submission_text(run, suffix)
        assert name == f"mmar-submission{suffix}"
        rec = json.loads(text)[0] if suffix == ".json" else json.loads(text.splitlines()[0])
        assert rec["answer_prediction"] == rec["model_prediction"] == "y" and rec["modality"] == "sound"


def test_letter_benchmark_submissions(tmp_path):
    mmsu = load_items("mmsu", [write_jsonl(tmp_path / "mmsu.jsonl", [mmsu_row(0, "c"), mmsu_row(1)])])
    run = score_predictions(mmsu, preds({"0": "<answer>2</answer>", "1": "<answer>0</answer>"}),
                            benchmark="mmsu", fmt="alarm")
    name, text = submission_text(run)
    recs = [json.loads(line) for line in text.splitlines()]
    assert name == "mmsu-submission.jsonl" and [r["response"] for r in recs] == ["C", "A"]
    assert recs[0]["answer_gt"] == "c0" and recs[0]["sub-category"] == "Phonology"
    assert run.report["scores"]["official"]["groups"]["category/sub-category"]["Perception/Phonology"][
        "correct"] == 1
    air = load_items("airbench", [write_json(tmp_path / "Foundation_meta.json", [air_row(0)])])
    run = score_predictions(air, preds({"100": "The answer is B."}), benchmark="airbench", fmt="native")
    name, text = submission_text(run)
    rec = json.loads(text)
    assert name == "Foundation_result_modelx.jsonl" and rec["response"] == "The answer is B."
    assert rec["task_name"] == "Speaker_Number_Verification" and rec["uniq_id"] == 100
    assert any("prints per-task rows only" in n for n in run.report["notes"])


def test_atomic_write_replaces_whole_files(tmp_path):
    path = atomic_write(tmp_path / "a" / "r.json", "one")
    atomic_write(path, "two")
    assert path.read_text() == "two" and [p.name for p in path.parent.iterdir()] == ["r.json"]
