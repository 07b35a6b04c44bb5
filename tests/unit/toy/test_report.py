"""The toy loop's report: per-type figures over seeds, the targets with their worst values, the exit code."""

import json

import pytest

from alarm.toy.__main__ import main
from alarm.toy.report import RUNS, TARGETS, render, summarize, wilson
from alarm.toy.world import QTYPES


def seed_result(seed: int, audio: int = 31, teacher: int = 32, parsed: int = 32, leak_r: float = 0.0,
                same: int = 256, reading: dict | None = None) -> dict:
    """A seed's result as `alarm.toy` writes it: 32 questions per type, `audio` of them right."""
    def counts(k: int, p: int = 32) -> dict:
        return {"n": 32, "correct": k, "parsed": p}

    per_type = {q: {"R@256": counts(audio, parsed), "teacher": counts(teacher), "R0@256": counts(20),
                    "R@64": counts(audio), "R@0": counts(8, 16)} for q in QTYPES}
    runs = {name: {"n": 256, "correct": sum(per_type[q][name]["correct"] for q in QTYPES),
                   "parsed": sum(per_type[q][name]["parsed"] for q in QTYPES),
                   "leak": {"lexical": 0.0, "held_out": 0.0, "any": 1.0 if name == "R0@256" else 0.0}}
            for name in RUNS}
    return {
        "seed": seed, "size": {"train_clips": 400, "per_type": 32, "epochs": 12},
        "eval": {"items": 256, "per_type": 32, "chance": 0.38}, "per_type": per_type, "runs": runs,
        "corpus": {"rows": 1347, "kept": 1340, "distinct_targets": 700,
                   "leak": {"R0": {"lexical": 1.0, "held_out": 1.0, "any": 1.0},
                            "R": {"lexical": leak_r, "held_out": 0.0, "any": leak_r}}},
        "train": {"R": {"steps": 900, "first_loss": 2.5, "last_loss": 0.3},
                  "R0": {"steps": 900, "first_loss": 2.6, "last_loss": 0.3}},
        "text_identical": {"same": same, "n": 256},
        "depends_on": {"world seed": seed, "torch CPU capability": "AVX512", "teacher sha256": "ab12"},
        "seconds": {"teacher + encoder": 1.0, "generate": 60.0, "train": 300.0, "eval": 90.0},
        "teacher_reading": {q: 1.0 for q in QTYPES} | (reading or {}),
    }


def test_wilson_interval():
    lo, hi = wilson(30, 32)
    assert 0.79 < lo < 0.80 and 0.98 < hi < 0.99
    assert wilson(0, 0) == (0.0, 1.0) and wilson(32, 32)[1] == 1.0


def test_the_worst_seed_decides_each_target():
    s = summarize([seed_result(0), seed_result(1, audio=28)])
    t = s["per_type"]["pitch"]
    assert t["ratio_mean"] == pytest.approx((31 / 32 + 28 / 32) / 2) and t["ratio_worst"] == 28 / 32
    assert t["worst_seed"] == 1 and t["n"] == 64 and t["audio"] == 59 / 64
    met = {x["name"]: x["met"] for x in s["targets"]}
    assert met == {"audio_vs_teacher": False, "parsed": True, "target_leak": True, "reasoning_leak": True,
                   "teacher_reads": True, "text_identical": True}
    assert not s["targets_met"] and summarize([seed_result(0)])["targets_met"]
    assert s["runs"]["R0@256"]["leak"] == 1.0 and s["runs"]["R@0"]["parsed"] == 0.5


@pytest.mark.parametrize("broken, name", [({"parsed": 31}, "parsed"), ({"leak_r": 0.02}, "target_leak"),
                                          ({"same": 255}, "text_identical"),
                                          ({"reading": {"loudness": 0.4375}}, "teacher_reads")])
def test_each_target_can_fail(broken, name):
    s = summarize([seed_result(0), seed_result(1, **broken)])
    assert [x["name"] for x in s["targets"] if not x["met"]] == [name]


def test_a_teacher_not_ours_has_no_reading_target():
    other = [seed_result(0), seed_result(1)]
    for r in other:
        r["teacher_reading"] = None  # `--teacher`: a checkpoint this code did not build
    assert "teacher_reads" not in {x["name"] for x in summarize(other)["targets"]}


def test_the_report_names_every_figure():
    text = render(summarize([seed_result(0), seed_result(1, audio=28)]))
    for needle in ("| pitch | 92.2% (83%-97%) | 100.0% (94%-100%) | 92.2% | 87.5% (seed 1) | 100.0% |",
                   f"audio-only accuracy / the teacher's, every question type (worst: kind, seed 1) | 87.5% | >= "
                   f"{TARGETS['audio_vs_teacher']:.0%} | NOT met", "| adapter trained on R0 (not rephrased), thinking "
                   "budget 256 | 62.5% (62.5%) | 100.0% (100.0%) | 100.0% (100.0%) |",
                   "| text-only answers identical with and without the adapter | 512 of 512 | == 100% | met |",
                   "| leak after rephrasing (lexical / held-out judge) | 0.0% / 0.0% | 0.0% / 0.0% |",
                   "| the teacher's answers to its own held-out description questions, every type (worst: kind, "
                   "seed 0): what its students can learn | 100.0% | >= 100% | met |",
                   "| teacher sha256 | ab12 | ab12 |", "| total (s) | 451.0 | 451.0 |", "Targets NOT met.",
                   "World seeds 0, 1: 400 training clips -> 1347 questions; 256 held-out questions (32 per type"):
        assert needle in text, needle
    results = [seed_result(0)]
    results[0]["size"] |= {"train_per_type": 150, "train_types": {"loudness": 225}}
    assert "400 training clips -> 1347 questions (150 per type; loudness 225); 256 held-out" in render(
        summarize(results))


@pytest.fixture(autouse=True)
def numerics_calls(monkeypatch) -> list:
    """The command's switch to portable numerics, recorded rather than done: this process has computed with
    torch already (the switch would refuse), and its environment must not leak into the other tests."""
    import alarm.toy.__main__ as cmd

    calls: list = []
    monkeypatch.setattr(cmd, "use_portable_numerics", lambda: calls.append("portable"))
    return calls


def test_the_command_runs_in_portable_numerics_unless_asked_for_native(monkeypatch, numerics_calls, capsys):
    import alarm.toy.__main__ as cmd

    monkeypatch.setattr(cmd, "run", lambda out, size, seeds, teacher: summarize([seed_result(0, audio=31)]))
    assert main([]) == 0 and numerics_calls == ["portable"]
    assert main(["--numerics", "native"]) == 0 and numerics_calls == ["portable"]
    with pytest.raises(SystemExit):
        main(["--numerics", "avx512"])
    assert "invalid choice: 'avx512'" in capsys.readouterr().err


def test_the_command_exits_2_when_a_target_is_missed(monkeypatch, capsys):
    import alarm.toy.__main__ as cmd

    monkeypatch.setattr(cmd, "run", lambda out, size, seeds, teacher: summarize(
        [seed_result(s, audio=20 if s == 2 else 31) for s in seeds]))
    assert main(["--seeds", "3"]) == 2 and "Targets NOT met." in capsys.readouterr().out
    assert main(["--seed", "4"]) == 0 and "World seed 4:" in capsys.readouterr().out


def test_the_command_sets_the_training_size_and_checks_it(monkeypatch, capsys):
    import alarm.toy.__main__ as cmd
    from services.toy import SIZES

    sizes = []
    monkeypatch.setattr(cmd, "run", lambda out, size, seeds, teacher: sizes.append(size) or summarize(
        [seed_result(s, audio=31) for s in seeds]))
    assert main(["--train-per-type", "300", "--epochs", "6"]) == 0
    assert (sizes[0].train_per_type, sizes[0].epochs, sizes[0].per_type) == (300, 6, SIZES["full"].per_type)
    assert main(["--size", "small"]) == 0 and sizes[1] == SIZES["small"]
    assert main(["--train-type", "count=225", "--train-type", "pitch=100"]) == 0
    assert sizes[2].train_quota() == {**SIZES["full"].train_quota(), "count": 225, "pitch": 100}
    assert main(["--train-per-type", "40", "--train-type", "count=60"]) == 0  # one number for all, then count's
    assert sizes[3].train_quota() == {**dict.fromkeys(SIZES["full"].train_quota(), 40), "count": 60}
    assert main(["--train-type", f"count={SIZES['full'].train_per_type}"]) == 0 and sizes[4] == SIZES["full"]
    for bad in (["--train-per-type", "0"], ["--epochs", "0"], ["--epochs", "nan"], ["--epochs", "inf"],
                ["--train-type", "count"], ["--train-type", "beeps=3"], ["--train-type", "count=0"],
                ["--train-type", "count=-2"]):
        with pytest.raises(SystemExit) as e:
            main(bad)
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--epochs must be a number > 0" in err and len(sizes) == 5
    assert "--train-type takes TYPE=N with TYPE one of kind, pitch, loudness" in err and "'beeps=3'" in err


def test_a_resumed_seed_folder_keeps_its_size_and_numerics(tmp_path, monkeypatch):
    from alarm import numerics
    from alarm.errors import InvalidInput
    from services.toy import SIZES, Size, check_size

    for k in numerics.PORTABLE:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(numerics, "cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "avx", "avx2", "fma"})
    check_size(tmp_path, SIZES["full"])
    check_size(tmp_path, SIZES["full"])  # the same size resumes
    with pytest.raises(InvalidInput, match=r"train_per_type 150 -> 300, epochs 12 -> 6.*another --out"):
        check_size(tmp_path, Size(train_per_type=300, per_type=32, epochs=6))
    saved = '{"train_per_type": 150, "train_types": {}, "per_type": 32, "epochs": 12, "numerics": "native"}\n'
    assert (tmp_path / "size.json").read_text() == saved
    for k, v in numerics.PORTABLE.items():  # the environment `use_portable_numerics` sets, without its effects
        monkeypatch.setenv(k, v)
    with pytest.raises(InvalidInput, match=r"numerics native -> portable.*--numerics"):
        check_size(tmp_path, SIZES["full"])
    assert (tmp_path / "size.json").read_text() == saved
    check_size(tmp_path / "intel", SIZES["full"])
    monkeypatch.setattr(numerics, "cpu_vendor", lambda: "AuthenticAMD")  # MKL's AUTO branch: not Intel's bytes
    with pytest.raises(InvalidInput, match=r"numerics portable -> portable, MKL AUTO"):
        check_size(tmp_path / "intel", SIZES["full"])
    monkeypatch.setattr(numerics, "cpu_vendor", lambda: "GenuineIntel")
    (tmp_path / "old").mkdir()  # a folder from before the mode was recorded resumes natively only
    (tmp_path / "old" / "size.json").write_text('{"train_per_type": 150, "per_type": 32, "epochs": 12}\n')
    with pytest.raises(InvalidInput, match=r"numerics native -> portable"):
        check_size(tmp_path / "old", SIZES["full"])
    monkeypatch.delenv("MKL_CBWR")
    check_size(tmp_path / "old", SIZES["full"])  # recorded before types had their own numbers: none had
    with pytest.raises(InvalidInput, match=r"train_types \{\} -> \{'loudness': 225\}.*--train-type"):
        check_size(tmp_path / "old", Size(train_per_type=150, per_type=32, epochs=12, train_types=(("loudness", 225),)))


def test_a_rerun_that_only_checks_keeps_the_stage_times_of_the_run_that_did_the_work(tmp_path):
    from services.toy import stage_seconds

    assert stage_seconds(tmp_path, {"train": 1523.46, "eval": 219.8}) == {"train": 1523.5, "eval": 219.8}
    (tmp_path / "result.json").write_text(json.dumps({"seconds": {"train": 1523.5, "eval": 219.8}}))
    assert stage_seconds(tmp_path, {"train": 2.8, "eval": 46.2}) == {"train": 1523.5, "eval": 219.8}
    # a stage that took longer this time (resumed from a crash, or the teacher built anew) shows this time
    assert stage_seconds(tmp_path, {"train": 1600.04, "eval": 46.2}) == {"train": 1600.0, "eval": 219.8}
