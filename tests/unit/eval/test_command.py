"""`python -m alarm.eval` end to end with a scripted Answerer injected: MMAU items with tiny wav files,
resume, the score subcommand, and the errors that stop a run before any inference."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from alarm.eval.__main__ import main
from tests.unit.eval.helpers import ScriptedAnswerer, mmau_row, mmsu_row, write_json, write_jsonl


def _reply(prompt, system):
    i = int(re.search(r"Question (\d+)\?", prompt).group(1))
    return {0: f"<answer>{i % 4}</answer>", 1: f"<answer>{(i + 1) % 4}</answer>", 2: "I am not sure."}[i % 3]


@pytest.fixture
def bench(tmp_path):
    meta = write_json(tmp_path / "mmau-test-mini.json", [mmau_row(i, answer=i % 4) for i in range(9)])
    root = tmp_path / "audio"
    (root / "test-mini-audios").mkdir(parents=True)
    t = np.arange(1600) / 16000
    for i in range(9):
        sf.write(root / "test-mini-audios" / f"q{i}.wav", 0.1 * np.sin(2 * np.pi * 440 * t), 16000)
    return meta, root, tmp_path / "out"


def args(meta, root, out, *extra):
    return ["benchmark=mmau", f"meta=[{meta}]", f"audio_root={root}", f"out={out}", "max_thinking_tokens=32",
            "max_tokens=128", "seed=1", *extra]


def test_run_score_and_resume(bench, capsys):
    meta, root, out = bench
    fake = ScriptedAnswerer(_reply)
    assert main(args(meta, root, out, "concurrency=4"), answerer=fake) == 0
    assert len(fake.calls) == 9 and fake.closed
    assert all(c["audio"].endswith(".wav") for c in fake.calls)
    assert {(c["max_thinking_tokens"], c["max_tokens"], c["seed"]) for c in fake.calls} == {(32, 128, 1)}
    names = {p.name for p in out.iterdir()}
    assert {"run.json", "predictions.jsonl", "report.json", "report.md", "scored.jsonl",
            "mmau-submission.json"} <= names
    report = json.loads((out / "report.json").read_text())
    assert report["scores"]["official"]["overall"] == {"correct": 3, "total": 9, "accuracy": 3 / 9}
    assert report["scores"]["strict"]["overall"]["correct"] == 3
    assert report["parse"]["failed"] == 3 and report["settings"]["fallback"] == "none"
    assert report["run"]["max_thinking_tokens"] == 32 and report["run"]["seed"] == 1
    assert report["run"]["model"] == "injected ScriptedAnswerer" and report["run"]["failed_requests"] == 0
    assert "report.md:" in capsys.readouterr().out

    again = ScriptedAnswerer(_reply)
    assert main(args(meta, root, out), answerer=again) == 0
    assert again.calls == []  # every item already answered

    # rescoring needs no answerer; the reference parse has no fallback unless asked for
    assert main(["score", f"out={out}", "parse=reference"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"] == {"format": "alarm", "parse": "reference", "fallback": "none",
                                  "scorers": ["official", "strict"]}
    assert report["parse"]["fallback_used"] == {} and report["scores"]["official"]["overall"]["correct"] == 3
    # ALARM's option-0 fallback, asked for, credits the unparsed items with gold 0
    assert main(["score", f"out={out}", "parse=reference", "fallback=first"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["parse"]["fallback_used"] == {"first": 3}
    assert report["scores"]["official"]["overall"]["correct"] == 4  # + q8 (gold 0)
    assert main(["score", f"out={out}", "scorer=strict", "fallback=random"]) == 0
    assert list(json.loads((out / "report.json").read_text())["scores"]) == ["strict"]


# every character str.splitlines() splits on
LINE_BREAKS = ["\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


class BreakingAnswerer(ScriptedAnswerer):
    """Answers and reasoning holding one of Python's line boundaries each, around a valid answer tag."""

    async def answer(self, audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed):
        await super().answer(audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed)
        i = int(re.search(r"Question (\d+)\?", prompt).group(1))
        brk = LINE_BREAKS[i % len(LINE_BREAKS)]
        return f"It is{brk}clear.{brk}<answer>{i % 4}</answer>", f"I hear{brk}a tone", "STOP"


def test_answers_with_any_line_separator_round_trip(bench):
    meta, root, out = bench
    assert main(args(meta, root, out), answerer=BreakingAnswerer(_reply)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["items"]["answered"] == 9 and report["scores"]["strict"]["overall"]["correct"] == 9
    again = BreakingAnswerer(_reply)
    assert main(args(meta, root, out), answerer=again) == 0 and again.calls == []  # the resume reads them all
    assert main(["score", f"out={out}"]) == 0
    for name in ("predictions.jsonl", "scored.jsonl"):
        text = (out / name).read_text(encoding="utf-8")
        assert len(text.splitlines()) == 9  # one record a line, even for splitlines() readers
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {p["reasoning"] for p in preds} == {f"I hear{b}a tone" for b in LINE_BREAKS[:9]}


def test_other_settings_in_the_same_folder_are_refused(bench, capsys):
    meta, root, out = bench
    assert main(args(meta, root, out, "limit=2"), answerer=ScriptedAnswerer(_reply)) == 0
    fake = ScriptedAnswerer(_reply)
    assert main(args(meta, root, out, "format=native"), answerer=fake) == 1
    assert "holds a run with other settings (format: 'alarm' -> 'native')" in capsys.readouterr().err
    assert fake.calls == []


def test_another_model_in_the_same_folder_is_refused(bench, capsys):
    class OtherModel(ScriptedAnswerer):
        pass

    meta, root, out = bench
    assert main(args(meta, root, out, "limit=2"), answerer=ScriptedAnswerer(_reply)) == 0
    fake = OtherModel(_reply)
    assert main(args(meta, root, out), answerer=fake) == 1
    err = capsys.readouterr().err
    assert "holds the answers of another model ('injected ScriptedAnswerer', now 'injected OtherModel')" in err
    assert fake.calls == []


def test_missing_audio_stops_before_inference(bench, capsys):
    meta, root, out = bench
    (root / "test-mini-audios" / "q3.wav").unlink()
    fake = ScriptedAnswerer(_reply)
    assert main(args(meta, root, out), answerer=fake) == 1
    err = capsys.readouterr().err
    assert "1 of 9 audio files are missing" in err and "q3.wav" in err and fake.calls == []
    assert not (out / "predictions.jsonl").exists()


def test_failed_requests_exit_nonzero_and_are_retried(bench, capsys):
    meta, root, out = bench
    assert main(args(meta, root, out), answerer=ScriptedAnswerer(_reply, fail_on={"Question 4?"})) == 1
    assert "1 requests failed" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["items"]["answered"] == 8 and report["run"]["failed_requests"] == 1
    retry = ScriptedAnswerer(_reply)
    assert main(args(meta, root, out), answerer=retry) == 0 and len(retry.calls) == 1


def test_mmar_category_outside_the_official_four_stops_before_inference(tmp_path, capsys):
    rows = [{"id": f"m{i}", "audio_path": f"a/m{i}.wav", "question": f"Question {i}?", "choices": ["x", "y"],
             "answer": "x", "modality": "sound", "category": c} for i, c in enumerate(["Signal Layer", "Layer 5"])]
    meta = write_jsonl(tmp_path / "MMAR-meta.jsonl", rows)
    (tmp_path / "audio" / "a").mkdir(parents=True)
    for i in range(2):
        (tmp_path / "audio" / "a" / f"m{i}.wav").write_bytes(b"RIFF")
    argv = ["benchmark=mmar", f"meta=[{meta}]", f"audio_root={tmp_path / 'audio'}", f"out={tmp_path / 'out'}"]
    fake = ScriptedAnswerer(lambda p, s: "<answer>0</answer>")
    assert main(argv, answerer=fake) == 1 and fake.calls == []
    err = capsys.readouterr().err
    assert "item 'm1' has category='Layer 5'; the official scorer only knows category in ['Cultural Layer', " in err
    assert "scorer=strict" in err and not (tmp_path / "out").exists()
    assert main([*argv, "scorer=strict"], answerer=fake) == 0 and len(fake.calls) == 2


def test_native_mmsu_run(tmp_path):
    rows = [mmsu_row(i, "c") for i in range(3)]
    meta = write_jsonl(tmp_path / "mmsu.jsonl", rows)
    (tmp_path / "audio" / "audio").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "audio" / "audio" / f"{i}.wav").write_bytes(b"RIFF")
    answers = {"Q0": "C", "Q1": "Based on the audio, the answer is C.", "Q2": "answer: c"}
    fake = ScriptedAnswerer(lambda p, s: answers[re.search(r"Question: (Q\d)", p).group(1)])
    out = tmp_path / "out"
    argv = ["benchmark=mmsu", f"meta=[{meta}]", f"audio_root={tmp_path / 'audio'}", f"out={out}", "format=native"]
    assert main(argv, answerer=fake) == 0
    assert fake.calls[0]["system"] is None and "Respond with only the letter." in fake.calls[0]["prompt"]
    report = json.loads((out / "report.json").read_text())
    assert report["scores"]["strict"]["overall"]["correct"] == 3  # our parse reads all three
    assert report["scores"]["official"]["overall"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    assert report["scores"]["official"]["excluded"] == 1  # "answer: c" dropped from the denominator
    subs = [json.loads(line) for line in (out / "mmsu-submission.jsonl").read_text().splitlines()]
    assert [s["response"] for s in subs] == list(answers.values())


def test_usage_errors(bench, capsys):
    meta, root, out = bench
    no_seed = [a for a in args(meta, root, out, "fallback=random") if a != "seed=1"]
    with pytest.raises(SystemExit) as e:
        main(no_seed, answerer=ScriptedAnswerer(_reply))
    assert e.value.code == 2 and "fallback=random needs seed" in capsys.readouterr().err
    assert main(["score", f"out={out / 'none'}"]) == 1
    assert "pass benchmark=, format= and meta=" in capsys.readouterr().err
    no_seed = [a for a in args(meta, root, out, "limit=2") if a != "seed=1"]
    assert main(no_seed, answerer=ScriptedAnswerer(_reply)) == 0
    capsys.readouterr()
    assert main(["score", f"out={out}", "fallback=random"]) == 1
    assert "fallback=random needs seed= (the run recorded none)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # an unknown key names the valid ones, before anything runs
        main(args(meta, root, out, "max_thinking=3"), answerer=ScriptedAnswerer(_reply))
    assert e.value.code == 2 and "valid keys under <top level>: benchmark, meta" in capsys.readouterr().err


def test_a_bad_serve_override_fails_before_anything_is_written(bench, capsys):
    meta, root, out = bench
    assert main(args(meta, root, out, "serve.overrides=[llm.max_num_seq=3]")) == 1
    assert "unknown config key 'llm.max_num_seq'" in capsys.readouterr().err
    assert not out.exists()  # no run.json naming a model that never ran


@pytest.mark.parametrize("preset, serve, max_tokens", [("tiny", "tiny", 0), ("paper", "alarm-ca", 14000)])
def test_eval_presets(preset, serve, max_tokens):
    from alarm.config import EvalConfig, load_config

    cfg = load_config(EvalConfig, preset, ["benchmark=mmau", "meta=[m.json]", "audio_root=a", "out=o"],
                      section="eval")
    assert (cfg.serve.preset, cfg.max_thinking_tokens, cfg.max_tokens) == (serve, 8192, max_tokens)


def test_the_schema_literals_are_the_benchmarks_and_modes_the_library_knows():
    from typing import get_args

    from alarm.config.eval import Benchmark
    from alarm.eval.benchmarks import BENCHMARKS

    assert set(get_args(Benchmark)) == set(BENCHMARKS)
