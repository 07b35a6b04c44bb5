"""The toy world end to end (`python -m alarm.toy --size small`): teacher, corpus, adapter, held-out evaluation."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_small_toy_loop_learns_from_audio_and_reports(ray_cluster, tmp_path):
    from alarm.toy.report import render
    from services.toy import SIZES, run

    report = run(tmp_path, SIZES["small"])
    acc = report["accuracy"]
    assert acc["teacher_text"] >= 0.9  # the teacher answers from descriptions
    assert acc["audio"] >= 0.6 > acc["chance"]  # the adapter carries the sound kind to the frozen teacher
    leak = report["corpus"]["leak_rate"]
    assert leak["generated"] >= 0.9 and leak["rephrased"] <= 0.01  # R0 reads the description, R hears
    assert json.loads((tmp_path / "report.json").read_text()) == report
    text = render(report)
    assert "trained model, audio only" in text and "teacher reading the description" in text
    for stage in ("teacher + encoder", "data", "generate", "train", "eval"):
        assert stage in report["seconds"]
