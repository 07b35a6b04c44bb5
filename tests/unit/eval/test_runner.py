"""The run loop over an Answerer: prompts and budgets sent, resume from predictions.jsonl, failed requests,
the up-front audio check (local and s3://)."""

from __future__ import annotations

import asyncio
import json

import pytest

from alarm.eval.benchmarks import load_items
from alarm.eval.prompts import ALARM_SYSTEM
from alarm.eval.runner import (
    Answerer,
    EvalRunError,
    PredictionStore,
    RunSettings,
    audio_locations,
    check_audio,
    run_items,
)
from tests.unit.eval.helpers import ScriptedAnswerer, mmau_row, write_json

SETTINGS = RunSettings("mmau", "alarm", 64, 256, None, 5)


@pytest.fixture
def items(tmp_path):
    return load_items("mmau", [write_json(tmp_path / "m.json", [mmau_row(i) for i in range(6)])])


def run(items, answerer, store, **kw):
    audio = {it.id: f"/clips/{it.audio}" for it in items}
    return asyncio.run(run_items(items, answerer, SETTINGS, store, audio=audio, **kw))


def test_sends_prompt_audio_and_budgets(items, tmp_path):
    fake = ScriptedAnswerer(lambda prompt, system: "<answer>0</answer>")
    assert isinstance(fake, Answerer)
    stats = run(items, fake, PredictionStore(tmp_path / "p.jsonl"), concurrency=3)
    assert stats.done == 6 and not stats.failed
    call = next(c for c in fake.calls if "Question 0?" in c["prompt"])
    assert call["audio"] == "/clips/test-mini-audios/q0.wav" and call["system"] == ALARM_SYSTEM
    assert (call["max_thinking_tokens"], call["max_tokens"], call["seed"]) == (64, 256, 5)
    assert "<question>\nQuestion 0?\n</question>" in call["prompt"]
    assert "(Option_3) choice z of 0\n</options>" in call["prompt"]
    recs = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == [f"q{i}" for i in range(6)]
    assert recs[0]["answer"] == "<answer>0</answer>" and recs[0]["finish_reason"] == "STOP"


def test_resume_skips_answered_items(items, tmp_path):
    store = PredictionStore(tmp_path / "p.jsonl")
    first = ScriptedAnswerer(lambda p, s: "<answer>1</answer>")
    run(items[:4], first, store)
    second = ScriptedAnswerer(lambda p, s: "<answer>2</answer>")
    stats = run(items, second, store)
    assert (stats.skipped, stats.done, len(second.calls)) == (4, 2, 2)
    done = store.load()
    assert len(done) == 6 and done["q0"]["answer"] == "<answer>1</answer>" and done["q5"]["answer"].count("2")


def test_torn_last_line_is_dropped_and_retried(items, tmp_path):
    path = tmp_path / "p.jsonl"
    torn = json.dumps({"id": "q0", "answer": "a"}) + "\n" + '{"id": "q1", "ans'
    path.write_text(torn)
    store = PredictionStore(path)
    assert list(store.load()) == ["q0"] and path.read_text() == torn  # loading (e.g. rescoring) changes nothing
    fake = ScriptedAnswerer(lambda p, s: "x")
    run(items, fake, store)
    assert len(fake.calls) == 5 and len(store.load()) == 6
    assert all(json.loads(line) for line in path.read_text().split("\n")[:-1])  # the torn line was cut off


def test_a_bad_line_before_the_last_is_an_error_naming_it(items, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "q0", "answer": "a"}\nnot json\n{"id": "q1", "answer": "b"}\n')
    with pytest.raises(EvalRunError, match=r"p.jsonl: line 2 is not valid JSON"):
        PredictionStore(path).load()
    path.write_text('{"id": "q0", "answer": "a"}\n{"id": "q1"}\n')
    with pytest.raises(EvalRunError, match=r"p.jsonl: line 2 is not a prediction record"):
        PredictionStore(path).load()


def test_failed_requests_are_left_for_a_rerun(items, tmp_path):
    store = PredictionStore(tmp_path / "p.jsonl")
    stats = run(items, ScriptedAnswerer(lambda p, s: "x", fail_on={"Question 2?"}), store)
    assert stats.done == 5 and stats.failed == {"q2": "RuntimeError: scripted failure"}
    assert "q2" not in store.load()
    with pytest.raises(EvalRunError, match=r"stopped after 2 failed requests \(max_errors=2\)"):
        run(items, ScriptedAnswerer(lambda p, s: "x", fail_on={"Question"}),
            PredictionStore(tmp_path / "q.jsonl"), max_errors=2, concurrency=1)


def test_progress_lines_count_from_the_resumed_start_with_rate_and_eta(items, tmp_path, capsys):
    store = PredictionStore(tmp_path / "p.jsonl")
    run(items[:2], ScriptedAnswerer(lambda p, s: "<answer>1</answer>"), store)
    capsys.readouterr()
    run(items, ScriptedAnswerer(lambda p, s: "<answer>2</answer>"), store, concurrency=1, progress_every=2)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "resuming: 2 of 6 items already answered"
    assert [line.split(" (")[0] for line in lines[1:]] == ["eval 4/6", "eval 6/6"]
    assert all(" items/s eta " in line and line.endswith("0 failed") for line in lines[1:])
    assert lines[1].startswith("eval 4/6 (67%)") and " eta 0s " in lines[2]


def test_crop_sends_the_first_seconds_as_wav(items, tmp_path):
    import io

    import numpy as np
    import soundfile as sf

    for i, seconds in ((0, 3.0), (1, 0.5)):
        sf.write(tmp_path / f"{i}.flac", np.full(int(seconds * 8000), 0.25, np.float32), 8000)
    fake = ScriptedAnswerer(lambda p, s: "x")
    settings = RunSettings("mmau", "alarm", 0, 0, crop_audio_s=1.0)
    audio = {"q0": str(tmp_path / "0.flac"), "q1": str(tmp_path / "1.flac")}
    asyncio.run(run_items(items[:2], fake, settings, PredictionStore(tmp_path / "p.jsonl"), audio=audio,
                          concurrency=1))
    clips = [sf.read(io.BytesIO(c["audio"])) for c in fake.calls]
    assert [len(w) for w, _ in clips] == [8000, 4000] and {sr for _, sr in clips} == {8000}


def test_settings_mismatch_names_the_key():
    assert SETTINGS.mismatch({"format": "alarm", "max_thinking_tokens": 64}) is None
    assert SETTINGS.mismatch({"max_thinking_tokens": 8192}) == "max_thinking_tokens: 8192 -> 64"


def test_missing_audio_is_listed_before_running(items, tmp_path):
    root = tmp_path / "audio"
    (root / "test-mini-audios").mkdir(parents=True)
    for it in items[:4]:
        (root / it.audio).write_bytes(b"x")
    locations = audio_locations(items, str(root))
    with pytest.raises(EvalRunError, match=r"2 of 6 audio files are missing under audio_root=.*\n.*q4.wav"):
        check_audio(locations, str(root))
    check_audio(audio_locations(items[:4], str(root)), str(root))
    with pytest.raises(EvalRunError, match="only local folders and s3:// URIs"):
        audio_locations(items, "gs://bucket/x")


def test_missing_audio_on_s3(items, s3_endpoint):
    from alarm.checkpoints import s3_filesystem

    fs = s3_filesystem()
    fs.mkdir("eval-bucket")
    for it in items[:5]:
        fs.pipe(f"eval-bucket/mmau/{it.audio}", b"x")
    locations = audio_locations(items, "s3://eval-bucket/mmau/")
    assert locations["q0"] == "s3://eval-bucket/mmau/test-mini-audios/q0.wav"
    with pytest.raises(EvalRunError, match=r"1 of 6 audio files are missing .*\n  "
                                           r"s3://eval-bucket/mmau/test-mini-audios/q5\.wav"):
        check_audio(locations, "s3://eval-bucket/mmau/")
    check_audio(audio_locations(items[:5], "s3://eval-bucket/mmau"), "s3://eval-bucket/mmau")
