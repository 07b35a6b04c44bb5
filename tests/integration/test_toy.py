"""The toy world end to end (`python -m alarm.toy --size small`): teacher, corpora, adapters, held-out evaluation."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_small_toy_loop_learns_from_audio_and_reports(ray_cluster, tmp_path):
    from alarm.corpus.filters import answer_changed
    from alarm.toy.report import render
    from services.storage import RunStore
    from services.toy import SIZES, run

    summary = run(tmp_path, SIZES["small"], [0])
    (result,) = summary["results"]
    runs = summary["runs"]
    assert runs["teacher"]["accuracy"] >= 0.9  # the teacher answers from descriptions
    # reasoning over what the adapter makes it hear beats answering at once (budget 0); the small run's accuracy
    # itself is too close to chance (44%) at 32 questions to assert on: the full run's report holds the targets
    assert runs["R@256"]["accuracy"] > runs["R@0"]["accuracy"] + 0.2
    # a rephrase that changed the answer is never kept (how many there are is the teacher's: none, for some)
    rows = RunStore(str(tmp_path / "seed-0" / "toy-corpus")).read_shards(None).to_pylist()
    assert len(rows) == result["corpus"]["rows"] and 0 < result["corpus"]["kept"] <= len(rows)
    assert not any(r["keep"] for r in rows if answer_changed(r))
    assert result["corpus"]["leak"]["R0"]["any"] >= 0.9 and result["corpus"]["leak"]["R"]["any"] <= 0.01
    # R0-trained reasoning talks about a text. Whether R-trained reasoning stops doing so takes more steps than the
    # small run's ~200: with the seed-0 teacher of sha256 e8b59cbec66ec655 it still cited a text in 30 of 32
    # answers (300 questions per type: 32% after 1,084 steps, 7% after 1,626); the full run's report holds that target
    assert runs["R0@256"]["leak"] >= 0.5 and runs["R@256"]["leak"] <= runs["R0@256"]["leak"]
    assert result["text_identical"]["same"] == result["text_identical"]["n"] == result["eval"]["items"]
    assert json.loads((tmp_path / "report.json").read_text())["targets"] == summary["targets"]
    assert (tmp_path / "seed-0" / "result.json").exists()
    text = render(summary)
    assert "## Targets" in text and "thinking budget 0" in text
    for stage in ("teacher + encoder", "data", "generate", "train", "eval"):
        assert stage in result["seconds"]
